"""Common corruptions (ImageNet-C): 19 corruptions × severities 1..5.

Two ways in:
- the `corruptions` stage, whose variants are `<corruption>-<severity>`;
- `corrupt(image, name, severity, seed=0)`, a drop-in for
  `imagecorruptions.corrupt` (uint8 HxWx3 in and out).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from stages.base import Batch, Stage, StageParams, Variant
from stages.corruptions.catalogue import CATALOGUE, COMMON, CORRUPTIONS, EXTRA, corrupt_pixels

MIN_SIDE = 32
Severity = Annotated[int, Field(ge=1, le=5)]


class CorruptionsParams(StageParams):
    """`shifts:` entry of the corruptions stage."""

    stage: Literal["corruptions"]
    corruptions: list[str] = Field(default_factory=lambda: list(CORRUPTIONS), min_length=1,
                                   description="corruption names; default all 19")
    severities: list[Severity] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1,
                                       description="severity levels 1..5")

    @field_validator("corruptions")
    @classmethod
    def _known_names(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in CATALOGUE]
        if unknown:
            raise ValueError(f"unknown corruption(s) {', '.join(map(repr, unknown))}; "
                             f"valid choices: {', '.join(CORRUPTIONS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"corruptions must not repeat, got {names}")
        return names

    @field_validator("severities")
    @classmethod
    def _unique_severities(cls, levels: list[int]) -> list[int]:
        if len(set(levels)) != len(levels):
            raise ValueError(f"severities must not repeat, got {levels}")
        return levels


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Validate a uint8 image and return it as HxWx3 (grayscale is stacked)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy.ndarray image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image height and width must be at least {MIN_SIDE} pixels, got {image.shape[:2]}")
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def corrupt_with_details(image: np.ndarray, name: str, severity: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """uint8 image in, uint8 HxWx3 out, plus the per-sample values that were drawn."""
    return corrupt_pixels(as_rgb(image), name, severity, rng)


def corrupt(image: np.ndarray, name: str, severity: int = 1, seed: int = 0) -> np.ndarray:
    """Corrupt a uint8 image with ImageNet-C corruption `name` at `severity` (1..5).

    Accepts HxWx3, HxWx1 or HxW uint8 with both sides at least 32 pixels and
    returns uint8 HxWx3; the same (image, name, severity, seed) always gives
    the same result. Raises ValueError for anything else.
    """
    return corrupt_with_details(image, name, severity, np.random.default_rng(seed))[0]


class CorruptionStage(Stage):
    """ImageNet-C corruptions; one variant per corruption × severity."""

    name = "corruptions"
    # 3: pixelate shrinks with Pillow's box sampling; glass blur copies neighbours, as the reference does
    version = "3"
    Params = CorruptionsParams
    grid_fields = ("corruptions", "severities")

    def variants(self) -> list[Variant]:
        return [Variant(self.name, f"{name}-{severity}", {"corruption": name, "severity": severity})
                for name in self.params.corruptions for severity in self.params.severities]

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        out = batch.select(list(range(len(batch))))
        name, severity = variant.params["corruption"], variant.params["severity"]
        for i in out.ok_indices():
            try:
                out.images[i], drawn = corrupt_with_details(out.images[i], name, severity, out.rng(i))
            except ValueError as exc:
                out.fail(i, f"{variant.config}: {exc}")
                continue
            out.shift[i] = {**out.shift[i], **drawn}
        return out


STAGE = CorruptionStage

__all__ = ["COMMON", "CORRUPTIONS", "EXTRA", "STAGE", "CorruptionStage", "CorruptionsParams", "corrupt"]
