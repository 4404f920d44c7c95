"""`tiny_invert`: out = level - image, clipped to [0, 255], one config per level."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from stages.base import Batch, Stage, StageParams, Variant


class InvertParams(StageParams):
    stage: Literal["tiny_invert"]
    levels: list[int] = Field(default=[255], min_length=1, description="each level gives one config")


class InvertStage(Stage):
    """Inverts every pixel against a level."""

    name = "tiny_invert"
    version = "1.0"
    Params = InvertParams
    grid_fields = ("levels",)

    def variants(self) -> list[Variant]:
        return [Variant(stage=self.name, config=f"tiny_invert-{level}", params={"level": level})
                for level in self.params.levels]

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        for i in batch.ok_indices():
            image = batch.images[i].astype(np.int16)
            batch.images[i] = np.clip(variant.params["level"] - image, 0, 255).astype(np.uint8)
        return batch
