"""Image embeddings and the reference-similarity filters built on them.

A reference filter scores each sample by the cosine between its embedding and
that of the scale-0 image of its trajectory; the reference embeddings are
computed once per trajectory per batch (in `prepare`), not once per scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from stages.base import Batch, ManifestPathOrId
from stages.filters.base import Filter, FilterParams


class ModelParams(FilterParams):
    model: ManifestPathOrId = Field(description="local model directory (or a model id in the local HF cache)")

    @field_validator("model")
    @classmethod
    def _model_present(cls, value: str) -> str:
        from pathlib import Path

        looks_like_hub_id = value.count("/") == 1 and not value.startswith((".", "/", "~"))
        if not Path(value).is_dir() and not looks_like_hub_id:
            raise ValueError(f"model directory {value!r} does not exist")
        return value


def checked_weight_hashes(path: str, filter_name: str, model_types: tuple[str, ...]) -> dict[str, str]:
    """The model's weight hashes, after checking it is there (a local folder or
    in the local HF cache) and is of a kind the filter can run (`model_type`
    of its config.json), each failure as a one-line ValueError."""
    import json

    from stages.filters.models import model_dir, weight_hashes

    try:
        root = model_dir(path)
    except Exception as exc:  # noqa: BLE001 - any lookup failure means "not available offline"
        raise ValueError(
            f"{filter_name}.model {path!r}: not a local folder and not in the local Hugging Face cache "
            f"(nothing is downloaded at run time): {type(exc).__name__}"
        ) from None
    try:
        kind = json.loads((root / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        kind = None
    if kind not in model_types:
        raise ValueError(f"{filter_name}.model {path!r}: model_type {kind!r}, expected one of {list(model_types)}")
    return weight_hashes(path)


def rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 for the image processors (gray is repeated, alpha dropped)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def unit_rows(vectors: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float64 NumPy."""
    array = vectors.detach().float().cpu().numpy().astype(np.float64)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


class ReferenceFilter(Filter):
    """Cosine to the trajectory's scale-0 image; subclasses implement `embed`."""

    needs = frozenset({"image", "reference"})

    def __init__(self, params: FilterParams):
        super().__init__(params)
        self._references: dict[Any, np.ndarray] = {}

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """Unit-norm embeddings, one row per image."""
        raise NotImplementedError

    def prepare(self, references: Batch) -> None:
        size = self.params.batch_size
        rows = [self.embed(references.images[s:s + size]) for s in range(0, len(references), size)]
        trajectories = [shift["trajectory"] for shift in references.shift]
        self._references = dict(zip(trajectories, np.concatenate(rows)))

    def score(self, batch: Batch) -> dict[str, list[float]]:
        embeddings = self.embed(batch.images)
        references = np.stack([self._references[shift["trajectory"]] for shift in batch.shift])
        return {self.name: np.sum(embeddings * references, axis=1).tolist()}
