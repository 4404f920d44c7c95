"""Quality checks that need no model: blank, saturated, non-finite and
wrong-size outputs (a generation that collapsed, a decode that went wrong).

Scores: `quality_std` (pixel standard deviation; ~0 for a blank image),
`quality_saturated` (fraction of values at the range ends), `quality_finite`
(1 when every value is finite) and `quality_size` (1 when the image has the
expected height and width, or when no size is expected).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from stages.base import Batch
from stages.filters.base import Filter, FilterParams, Threshold


class QualityParams(FilterParams):
    filter: Literal["quality"]
    min_std: float = Field(default=2.0, ge=0, description="pixel std below this is blank (0..255 scale)")
    max_saturated: float = Field(default=0.95, ge=0, le=1, description="max fraction of values at 0 or 255")
    size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="expected (height, width); other sizes are rejected")


def quality_scores(image: np.ndarray, size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    values = np.asarray(image)
    as_float = values.astype(np.float64)
    finite = np.isfinite(as_float)
    kept = as_float[finite]
    # float images in [0, 1] are put on the 0..255 scale the thresholds use
    if values.dtype != np.uint8 and kept.size and kept.max() <= 1.0:
        kept = kept * 255.0
    std = float(kept.std()) if kept.size else 0.0
    saturated = float(np.mean((kept <= 0.0) | (kept >= 255.0))) if kept.size else 1.0
    size_ok = size is None or tuple(values.shape[:2]) == tuple(size)
    return std, saturated, float(finite.all()), float(size_ok)


class Quality(Filter):
    name = "quality"
    Params = QualityParams
    scores = ("quality_std", "quality_saturated", "quality_finite", "quality_size")

    def default_thresholds(self) -> dict[str, Threshold]:
        return {"quality_std": Threshold(min=self.params.min_std),
                "quality_saturated": Threshold(max=self.params.max_saturated),
                "quality_finite": Threshold(min=1.0), "quality_size": Threshold(min=1.0)}

    def score(self, batch: Batch) -> dict[str, list[float]]:
        rows = [quality_scores(image, self.params.size) for image in batch.images]
        return dict(zip(self.scores, (list(column) for column in zip(*rows))))


FILTERS = [Quality]
