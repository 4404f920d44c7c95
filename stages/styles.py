"""COCO-O-style natural-style domains: sketch, cartoon, painting, weather,
handmake, tattoo (REFERENCE §4).

`backend: diffusion` runs image-to-image with a per-domain prompt naming the
objects in the image; `backend: procedural` needs no model (edge sketch,
bilateral cartoon, stylised painting, snow from the corruption family,
embossed clay, ink tattoo). Either way the output has the source's exact
size, so COCO boxes in the sample's meta stay valid. One variant per domain;
with a COCO-format source the build also writes
`annotations/<domain>/instances.json` (COCO-O layout).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from stages.base import Batch, ManifestPathOrId, Stage, StageParams, Variant
from stages.generative.spec import NEGATIVE_PROMPT, DeviceName, DtypeName, gpu_resources

Domain = Literal["sketch", "cartoon", "painting", "weather", "handmake", "tattoo"]
DOMAINS: tuple[str, ...] = ("sketch", "cartoon", "painting", "weather", "handmake", "tattoo")
DOMAIN_PROMPTS: dict[str, str] = {
    "sketch": "a pencil sketch of {objects}, black and white line drawing",
    "cartoon": "a cartoon illustration of {objects}, flat colours, bold outlines",
    "painting": "an oil painting of {objects}, visible brush strokes",
    "weather": "a photo of {objects} in heavy snow and fog",
    "handmake": "a handmade clay and felt model of {objects}",
    "tattoo": "a tattoo of {objects}, ink on skin",
}


class StylesParams(StageParams):
    stage: Literal["styles"]
    domains: list[Domain] = Field(default_factory=lambda: list(DOMAINS), min_length=1)
    backend: Literal["diffusion", "procedural"] = "diffusion"
    model: ManifestPathOrId | None = Field(
        default=None, description="diffusers folder or cached repo id (diffusion backend)"
    )
    revision: str | None = None
    device: DeviceName = "auto"
    dtype: DtypeName = "auto"
    steps: int = Field(default=30, ge=1, le=1000)
    strength: float = Field(default=0.6, gt=0, le=1, description="share of the schedule run from the source")
    guidance_scale: float = Field(default=7.5, ge=0, le=50)
    negative_prompt: str = NEGATIVE_PROMPT
    prompts: dict[Domain, str] = Field(
        default_factory=dict, description="per-domain prompt overrides; {objects}"
    )
    resolution: int = Field(default=512, ge=8, le=4096, description="longer side while generating")

    @model_validator(mode="after")
    def _model_for_diffusion(self) -> StylesParams:
        if self.backend == "diffusion" and not self.model:
            raise ValueError("backend 'diffusion' needs model (or choose backend: procedural)")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"domains must not repeat, got {self.domains}")
        return self


def describe_objects(annotations: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(a.get("category") for a in annotations if a.get("category")))
    return ", ".join(with_article(n) for n in names[:5]) if names else "a scene"


def with_article(noun: str) -> str:
    """'an airplane', 'a person' (every COCO category that starts with a vowel letter takes 'an')."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class StylesStage(Stage):
    name = "styles"
    version = "1"
    Params = StylesParams
    grid_fields = ("domains",)  # dropping a domain leaves the others' shards as they are

    @property
    def resources(self) -> dict[str, float]:  # type: ignore[override]
        return gpu_resources(self.params.device) if self.params.backend == "diffusion" else {}

    def variants(self) -> list[Variant]:
        p = self.params
        common = {"backend": p.backend}
        if p.backend == "diffusion":
            common |= {
                "model": p.model,
                "steps": p.steps,
                "strength": p.strength,
                "guidance_scale": p.guidance_scale,
            }
        return [Variant(stage=self.name, config=d, params={"domain": d, **common}) for d in p.domains]

    def weight_hashes(self) -> dict[str, str]:
        if self.params.backend != "diffusion":
            return {}
        from stages.generative.models import model_weight_hashes

        try:
            return model_weight_hashes(self.params.model, self.params.revision)
        except (OSError, ValueError) as exc:
            raise ValueError(f"styles.model: {exc}") from None

    def release_files(self, rows: list[dict[str, Any]], source: Any, image_ext: str) -> dict[str, bytes]:
        """One COCO instances json per domain when the source can write one; file
        names are the shard members `<key>.<image_ext>`, boxes the source's."""
        instances = getattr(source, "coco_instances", None)
        if instances is None:
            return {}
        by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_domain[row["config"]].append(row)
        return {
            f"annotations/{domain}/instances.json": (
                json.dumps(instances(domain_rows, image_ext), sort_keys=True) + "\n"
            ).encode()
            for domain, domain_rows in sorted(by_domain.items())
        }

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        domain = variant.params["domain"]
        for i in batch.ok_indices():
            try:
                batch.images[i], details = self._stylise(batch, i, domain)
                batch.shift[i] = {**batch.shift[i], **details}
            except Exception as exc:  # noqa: BLE001 - one failed image is an error row
                batch.fail(i, f"styles: {type(exc).__name__}: {str(exc)[:300]}")
        return batch

    def _stylise(self, batch: Batch, i: int, domain: str) -> tuple[np.ndarray, dict[str, Any]]:
        from stages.generative.sampling import as_rgb

        image = as_rgb(batch.images[i])
        if self.params.backend == "procedural":
            return PROCEDURAL[domain](image, batch.rng(i)), {"domain": domain}
        prompt = self.params.prompts.get(domain, DOMAIN_PROMPTS[domain]).format(
            objects=describe_objects(batch.meta[i].get("annotations", []))
        )
        return self._diffuse(image, prompt, batch.seeds[i]), {"domain": domain, "prompt": prompt}

    def _diffuse(self, image: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        from stages.generative.models import load_model
        from stages.generative.sampling import (
            EvalCounter,
            GenerationRequest,
            fit_size,
            resize_image,
            sample_base,
        )
        from stages.generative.spec import resolve_device

        p = self.params
        model = load_model(p.model, p.revision, *resolve_device(p.device, p.dtype))
        height, width = fit_size(*image.shape[:2], p.resolution, model.size_multiple)
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=p.negative_prompt,
            seed=seed,
            height=height,
            width=width,
            steps=p.steps,
            guidance_scale=p.guidance_scale,
            init_image=resize_image(image, height, width),
            strength=p.strength,
        )
        out = sample_base(model, request, EvalCounter())[0]
        return resize_image(out, *image.shape[:2])


# --- procedural backend: uint8 HxWx3 in, same shape out ---------------------------------------------


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def sketch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour-dodge of the gray image with its blurred negative: pencil strokes on paper."""
    import cv2

    gray = _gray(image)
    blurred = cv2.GaussianBlur(255 - gray, (0, 0), sigmaX=max(1.0, min(gray.shape) / 40))
    pencil = cv2.divide(gray, 255 - blurred, scale=256)
    return np.repeat(pencil[:, :, None], 3, axis=2)


def cartoon(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flattened colours (bilateral smoothing, 6 levels) with dark outlines."""
    import cv2

    smooth = cv2.bilateralFilter(cv2.bilateralFilter(image, 7, 60, 7), 7, 60, 7)
    flat = (smooth // 43 * 43 + 21).astype(np.uint8)
    edges = cv2.adaptiveThreshold(
        cv2.medianBlur(_gray(image), 5), 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 5
    )
    return np.where(edges[:, :, None] == 0, 20, flat).astype(np.uint8)


def painting(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    return cv2.stylization(image, sigma_s=40, sigma_r=0.45)


def weather(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from stages.corruptions import corrupt_with_details

    return corrupt_with_details(image, "snow", 3, rng)[0]


def handmake(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clay look: posterised, softened colours lit by an emboss relief."""
    import cv2

    soft = cv2.bilateralFilter(image, 9, 80, 9)
    flat = (soft // 64 * 64 + 32).astype(np.float32)
    relief = cv2.filter2D(
        _gray(soft).astype(np.float32), -1, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
    )
    shade = np.clip(1.0 + (relief - relief.mean()) / 255.0, 0.6, 1.4)[:, :, None]
    return np.clip(flat * shade, 0, 255).astype(np.uint8)


def tattoo(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blue-black ink lines and stippled shading on a skin tone."""
    import cv2

    gray = _gray(image)
    lines = cv2.Canny(cv2.GaussianBlur(gray, (3, 3), 0), 60, 140) > 0
    shade = (255 - gray).astype(np.float32) / 255.0
    ink = np.asarray([38, 44, 60], np.float32)
    skin = np.asarray([224, 182, 150], np.float32)
    amount = np.where(lines, 1.0, 0.55 * shade * (shade > 0.45))[:, :, None]
    return (skin * (1 - amount) + ink * amount).astype(np.uint8)


PROCEDURAL = {
    "sketch": sketch,
    "cartoon": cartoon,
    "painting": painting,
    "weather": weather,
    "handmake": handmake,
    "tattoo": tattoo,
}

STAGE = StylesStage
