"""Built-in source made from the photographs scikit-image ships: the demo and
the benchmarks run with no download. Item i < len(images) is the centre crop
of image i; later items are distinct deterministic random crops (and flips),
so any number of samples can be drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from pipeline.sources.base import Loaded, Source, SourceItem, SourceSpec

# name -> file shipped in skimage/data (only bundled files, nothing fetched)
SAMPLE_FILES: dict[str, str] = {
    "astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
    "rocket": "rocket.jpg", "motorcycle": "motorcycle_left.png", "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png", "retina": "retina.jpg", "microaneurysms": "microaneurysms.png",
    "cell": "cell.png", "camera": "camera.png", "brick": "brick.png", "grass": "grass.png",
    "gravel": "gravel.png", "coins": "coins.png", "moon": "moon.png", "page": "page.png",
    "text": "text.png", "horse": "horse.png", "logo": "logo.png", "color": "color.png",
}
DEFAULT_IMAGES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field"]


class SamplesSpec(SourceSpec):
    kind: Literal["samples"]
    images: list[str] = Field(default_factory=lambda: list(DEFAULT_IMAGES), min_length=1)
    count: int | None = Field(default=None, ge=1, le=1_000_000,
                              description="number of items, at most 1,000,000 (default: one per image)")
    size: int = Field(default=224, ge=8, le=4096, description="side of the square output images")
    channels: Literal[1, 3] = 3
    seed: int = Field(default=0, ge=0)

    @field_validator("images")
    @classmethod
    def _known_images(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in SAMPLE_FILES]
        if unknown:
            raise ValueError(f"unknown sample image(s) {unknown}; choose from {sorted(SAMPLE_FILES)}")
        return names


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


@cache
def _base_image(name: str, channels: int) -> tuple[np.ndarray, str]:
    path = _skimage_data_dir() / SAMPLE_FILES[name]
    data = path.read_bytes()
    with Image.open(path) as im:
        im = im.convert("RGB" if channels == 3 else "L")
        pixels = np.asarray(im)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, hashlib.sha256(data).hexdigest()


class SamplesSource(Source):
    kind = "samples"
    Spec = SamplesSpec
    provides_class_names = False

    def _recipe(self, i: int) -> dict:
        spec = self.spec
        name = spec.images[i % len(spec.images)]
        if i < len(spec.images):
            return {"image": name, "crop": "center", "flip": False}
        rng = np.random.default_rng([spec.seed, i])
        return {"image": name, "crop": [float(v) for v in rng.uniform(0, 1, 3).round(6)],
                "flip": bool(rng.integers(2))}

    def index(self) -> Iterator[SourceItem]:
        # Item i is a pure function of its base file, output size, channels and its recipe, and
        # the recipe of a random crop is a pure function of (spec.seed, i). Hashing those inputs
        # is therefore a content hash, without drawing a million recipes (one RNG construction
        # per item would dominate planning a large release).
        spec = self.spec
        count = spec.count or len(spec.images)
        n_images = len(spec.images)
        common = [f"{name}\x1f{_base_image(name, spec.channels)[1]}\x1f{spec.size}\x1f{spec.channels}"
                  for name in spec.images]
        for i in range(count):
            name = spec.images[i % n_images]
            recipe = "center" if i < n_images else f"random\x1f{spec.seed}\x1f{i}"
            digest = hashlib.sha256(f"{common[i % n_images]}\x1f{recipe}".encode()).hexdigest()
            yield SourceItem(key=f"{name}-{i:06d}", sha256=digest, label=None, ref=i)

    def load(self, item: SourceItem) -> Loaded:
        recipe = self._recipe(int(item.ref))
        base, _ = _base_image(recipe["image"], self.spec.channels)
        h, w = base.shape[:2]
        side = min(h, w)
        if recipe["crop"] == "center":
            top, left = (h - side) // 2, (w - side) // 2
        else:
            scale, fy, fx = recipe["crop"]
            side = max(8, int(side * (0.35 + 0.65 * scale)))
            top, left = int(fy * (h - side)), int(fx * (w - side))
        crop = base[top:top + side, left:left + side]
        if recipe["flip"]:
            crop = crop[:, ::-1]
        size = self.spec.size
        mode = "RGB" if crop.shape[2] == 3 else "L"
        resized = Image.fromarray(np.ascontiguousarray(crop.squeeze(-1) if mode == "L" else crop), mode)
        resized = resized.resize((size, size), Image.Resampling.LANCZOS)
        out = np.asarray(resized)
        return Loaded(image=out if out.ndim == 3 else out[:, :, None], meta={"sample": recipe})


SOURCE = SamplesSource
