"""Near-duplicate removal by perceptual hash (pHash, 64 bits by default).

`dedup_distance` is the Hamming distance from a sample's hash to the nearest
earlier sample of a *different* trajectory (or source image, when there are no
trajectories) in the same batch; the first of a group of near-duplicates keeps
the maximum distance, later ones fall below `min_distance` and are rejected.
Samples of one trajectory or one source image are never compared with each
other: a mild shift of the same picture is the point, not a duplicate.

Scope: one batch, i.e. one task (one shard). Near-duplicates in different
shards are not seen here; `nearest_earlier` over the hashes of a whole release
(`perceptual_hash` of every kept image, in key order) finds those in a second
pass.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from stages.base import Batch
from stages.filters.base import Filter, FilterParams, Threshold
from stages.filters.embedding import rgb


class DedupParams(FilterParams):
    filter: Literal["dedup"]
    # compare within the whole task, not per model-sized chunk
    batch_size: int = Field(default=100_000, ge=1)
    hash_size: int = Field(default=8, ge=4, le=16, description="pHash side; bits = hash_size**2")
    min_distance: int = Field(default=5, ge=1, description="Hamming distance below this is a duplicate")


def perceptual_hash(image: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """pHash as a bool vector of hash_size**2 bits."""
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(rgb(image)), hash_size=hash_size).hash.reshape(-1)


def nearest_earlier(bits: np.ndarray, groups: list[Any]) -> np.ndarray:
    """For each row of `bits` (n × b bools), the Hamming distance to the nearest earlier
    row of another group; b when there is none."""
    n, width = bits.shape
    words = np.packbits(bits, axis=1)
    group_ids = np.unique(np.array([str(g) for g in groups]), return_inverse=True)[1]
    distances = np.full(n, width, dtype=np.int64)
    for j in range(1, n):
        other = group_ids[:j] != group_ids[j]
        if other.any():
            diff = np.bitwise_count(words[:j][other] ^ words[j]).sum(axis=1)
            distances[j] = int(diff.min())
    return distances


class Dedup(Filter):
    name = "dedup"
    Params = DedupParams
    scores = ("dedup_distance",)

    def default_thresholds(self) -> dict[str, Threshold]:
        return {"dedup_distance": Threshold(min=float(self.params.min_distance))}

    def score(self, batch: Batch) -> dict[str, list[float]]:
        bits = np.stack([perceptual_hash(image, self.params.hash_size) for image in batch.images])
        groups = [shift.get("trajectory", source) for shift, source in zip(batch.shift, batch.source_keys)]
        return {"dedup_distance": nearest_earlier(bits, groups).astype(float).tolist()}


FILTERS = [Dedup]
