"""Near-duplicate removal by perceptual hash (pHash, 64 bits by default).

`dedup_distance` is the Hamming distance from a sample's hash to the nearest
earlier sample of a *different* trajectory (or source image, when there are no
trajectories) in the same batch; the first of a group of near-duplicates keeps
the maximum distance, later ones fall below `min_distance` and are rejected.
Samples of one trajectory or one source image are never compared with each
other: a mild shift of the same picture is the point, not a duplicate.

Scope here: one batch, i.e. one task. The task also records every scored
sample's hash as `meta["phash"]` (hex), so the release-wide pass
(`duplicates_of_earlier`, run by `stages.filters.release`) finds
near-duplicates across tasks from the table alone, without pixels.
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


def hash_hex(bits: np.ndarray) -> str:
    """A bool hash vector as hex (packed bits, zero-padded to whole bytes)."""
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes().hex()


def bits_from_hex(text: str, n_bits: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n_bits].astype(bool)


def duplicates_of_earlier(bits: np.ndarray, groups: list[Any], min_distance: int) -> dict[int, tuple[int, int]]:
    """Row j -> (kept row, distance) for every row within `min_distance` of an earlier *kept*
    row of another group; the first of a group of near-duplicates is kept. Comparing with
    kept rows only means a chain a~b~c keeps c when it is far enough from a."""
    words = np.packbits(bits, axis=1)
    group_ids = np.unique(np.array([str(g) for g in groups]), return_inverse=True)[1]
    kept: list[int] = []
    duplicates: dict[int, tuple[int, int]] = {}
    for j in range(len(words)):
        earlier = np.array(kept, dtype=np.int64)
        earlier = earlier[group_ids[earlier] != group_ids[j]] if kept else earlier
        if earlier.size:
            diff = np.bitwise_count(words[earlier] ^ words[j]).sum(axis=1)
            nearest = int(diff.argmin())
            if diff[nearest] < min_distance:
                duplicates[j] = (int(earlier[nearest]), int(diff[nearest]))
                continue
        kept.append(j)
    return duplicates


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

    def record_hashes(self, batch: Batch) -> None:
        """`meta["phash"]` of every ok sample with pixels, for the release-wide pass."""
        for i in batch.ok_indices():
            if batch.images[i] is not None:
                phash = hash_hex(perceptual_hash(batch.images[i], self.params.hash_size))
                batch.meta[i] = {**(batch.meta[i] or {}), "phash": phash}


FILTERS = [Dedup]
