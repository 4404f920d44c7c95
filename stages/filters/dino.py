"""DINOv2 reference similarity (CNS-Bench): cosine between the CLS embeddings
of an image and of the scale-0 image of its trajectory (0.7812 in CNS-Bench)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from stages.filters.embedding import ModelParams, ReferenceFilter, checked_weight_hashes, rgb, unit_rows
from stages.filters.models import load_dino


class DinoRefParams(ModelParams):
    filter: Literal["dino_ref"]


class DinoRef(ReferenceFilter):
    name = "dino_ref"
    Params = DinoRefParams
    scores = ("dino_ref",)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        model, processor = load_dino(self.params.model)
        inputs = processor(images=[rgb(im) for im in images], return_tensors="pt")
        with torch.inference_mode():
            out = model(pixel_values=inputs["pixel_values"].to(model.device))
        return unit_rows(out.pooler_output)

    def weight_hashes(self) -> dict[str, str]:
        return checked_weight_hashes(self.params.model, self.name, ("dinov2",))


FILTERS = [DinoRef]
