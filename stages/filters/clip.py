"""CLIP filters (CNS-Bench): image–text agreement with the class (and the
shift), and image–image similarity to the trajectory's unshifted image.

Image–text scores are on the CLIPScore scale, max(100 × cosine, 0), so the
published thresholds (28.739, 35.293) apply; image–image scores are plain
cosines (0.8059 for CLIP in CNS-Bench).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import field_validator

from stages.base import Batch
from stages.filters.base import Filter
from stages.filters.embedding import ModelParams, ReferenceFilter, checked_weight_hashes, rgb, unit_rows
from stages.filters.models import features, load_clip


class ClipEncoder:
    """Shared image/text embedding for the CLIP filters (text embeddings memoised per prompt).

    Every image and every prompt goes through the model on its own: in a
    batch, prompts are padded to the longest one and kernels round by batch
    shape, so a score would depend on which other samples (or which prompts a
    worker had already memoised) shared the forward pass."""

    def __init__(self, path: str):
        self.path = path
        self._texts: dict[str, np.ndarray] = {}

    def images(self, images: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([self._image(im) for im in images])

    def _image(self, image: np.ndarray) -> np.ndarray:
        import torch

        model, processor = load_clip(self.path)
        inputs = processor(images=[rgb(image)], return_tensors="pt")
        with torch.inference_mode():
            out = model.get_image_features(pixel_values=inputs["pixel_values"].to(model.device))
        return unit_rows(features(out))

    def texts(self, prompts: list[str]) -> np.ndarray:
        for prompt in sorted(set(prompts) - set(self._texts)):
            self._texts[prompt] = self._text(prompt)
        return np.stack([self._texts[p] for p in prompts])

    def _text(self, prompt: str) -> np.ndarray:
        import torch

        model, processor = load_clip(self.path)
        tokens = processor(text=[prompt], return_tensors="pt", truncation=True,
                           max_length=model.config.text_config.max_position_embeddings)
        with torch.inference_mode():
            out = model.get_text_features(**{k: v.to(model.device) for k, v in tokens.items()})
        return unit_rows(features(out))[0]


class ClipTextParams(ModelParams):
    template: str

    @field_validator("template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            value.format(**{"class": "x", "shift": "y"})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template may use only {{class}} and {{shift}}: {exc}") from None
        return value


class ClipClassParams(ClipTextParams):
    filter: Literal["clip_class"]
    template: str = "a photo of a {class}"


class ClipClassShiftParams(ClipTextParams):
    filter: Literal["clip_class_shift"]
    template: str = "a photo of a {class} in {shift}"


class ClipRefParams(ModelParams):
    filter: Literal["clip_ref"]


class ClipTextFilter(Filter):
    """CLIPScore of each image against its prompt."""

    def __init__(self, params: ClipTextParams):
        super().__init__(params)
        self.encoder = ClipEncoder(params.model)

    def prompt(self, shift: dict) -> str:
        return self.params.template.format(**{"class": shift["class_name"], "shift": shift.get("shift_name")})

    def score(self, batch: Batch) -> dict[str, list[float]]:
        images = self.encoder.images(batch.images)
        texts = self.encoder.texts([self.prompt(shift) for shift in batch.shift])
        return {self.name: np.maximum(100.0 * np.sum(images * texts, axis=1), 0.0).tolist()}

    def weight_hashes(self) -> dict[str, str]:
        return checked_weight_hashes(self.params.model, self.name, ("clip",))


class ClipClass(ClipTextFilter):
    name = "clip_class"
    Params = ClipClassParams
    scores = ("clip_class",)
    needs = frozenset({"image", "class_name"})


class ClipClassShift(ClipTextFilter):
    name = "clip_class_shift"
    Params = ClipClassShiftParams
    scores = ("clip_class_shift",)
    needs = frozenset({"image", "class_name", "shift_name"})


class ClipRef(ReferenceFilter):
    name = "clip_ref"
    Params = ClipRefParams
    scores = ("clip_ref",)

    def __init__(self, params: ClipRefParams):
        super().__init__(params)
        self.encoder = ClipEncoder(params.model)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        return self.encoder.images(images)

    def weight_hashes(self) -> dict[str, str]:
        return checked_weight_hashes(self.params.model, self.name, ("clip",))


FILTERS = [ClipClass, ClipClassShift, ClipRef]
