"""Exact Poisson sampling for 8-bit images: one uniform draw per pixel.

Shot noise draws k ~ Poisson(λ·v/255) for every pixel value v. With only 256
possible means, the inverse CDF of each can be tabulated once per λ: a draw
is the number of CDF thresholds at or below a uniform 53-bit integer r, the
resolution of a float64 uniform. Every outcome k gets probability
round(2⁵³·F(k)) − round(2⁵³·F(k−1)) out of 2⁵³ (F by `scipy.special.pdtr`),
its Poisson probability to within float64 accuracy (relative 1e-12, or
2⁻⁵²); outcomes rarer than 2⁻⁵⁴ are never drawn, as with any float64
inverse-CDF sampler.

A guide table (Chen & Asau) makes the search O(1): the top 12 bits of r pick
one of 4096 equal-probability cells per level, which stores the count of
thresholds below the cell. Only draws landing in a cell that holds a
threshold (about 1–3 % of them) need r's other 41 bits, drawn then, and a
comparison against the thresholds.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

UNIFORM_BITS = 53  # as fine as a float64 uniform in [0, 1)
GUIDE_BITS = 12
MAX_LAMBDA = 2000.0  # tables grow with λ; larger λ are left to NumPy's sampler

_SHIFT = UNIFORM_BITS - GUIDE_BITS
_CELLS = 1 << GUIDE_BITS
_ONE = np.uint64(1 << UNIFORM_BITS)
_HOLDS_THRESHOLD = 0x8000  # guide flag: the cell holds a threshold, resolve by comparing


class LevelTable(NamedTuple):
    thresholds: np.ndarray  # uint64, the 256 rows 2⁵³·F_v(0..) back to back, each ending at 2⁵³
    keys: np.ndarray  # uint64 thresholds + (v << 53): one sorted array over all levels
    starts: np.ndarray  # intp, where each level's row begins
    guide: np.ndarray  # uint16 256 x 4096 flat: thresholds below each cell (+ flag)
    largest: int  # largest k any level can draw


@lru_cache(maxsize=32)
def level_table(lam: float) -> LevelTable:
    """Inverse-CDF tables of Poisson(lam·v/255) for v = 0..255 (pure, so cached per λ)."""
    from scipy.special import pdtr

    means = lam * np.arange(256) / 255.0
    # 12 sd + 20 past the largest mean the upper tail is below 2⁻⁵⁴ for every mean
    top = int(means[-1] + 12 * math.sqrt(means[-1]) + 20)
    counts = np.arange(top + 1)
    grid = np.round(pdtr(counts[None, :], means[:, None]) * float(_ONE)).astype(np.uint64)
    if not (grid[:, -1] == _ONE).all():
        raise RuntimeError(f"Poisson table for lambda={lam} does not reach the tail")
    lengths = np.argmax(grid == _ONE, axis=1) + 1  # a row ends at its first 2⁵³
    thresholds = grid[counts[None, :] < lengths[:, None]]
    rows = np.repeat(np.arange(256), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])

    def below(cell_of_threshold: np.ndarray) -> np.ndarray:
        """Per level and cell, how many thresholds have cell index <= it."""
        flat = rows * (_CELLS + 1) + cell_of_threshold.astype(np.intp)
        tally = np.bincount(flat, minlength=256 * (_CELLS + 1)).reshape(256, _CELLS + 1)
        return tally.cumsum(axis=1)[:, :_CELLS]

    # cell j spans r in [j·2^s, (j+1)·2^s): thresholds <= its first r, and <= its last r
    at_start = below((thresholds + np.uint64((1 << _SHIFT) - 1)) >> np.uint64(_SHIFT))
    at_end = below(thresholds >> np.uint64(_SHIFT))
    guide = (at_start | np.where(at_end != at_start, _HOLDS_THRESHOLD, 0)).astype(np.uint16)
    keys = thresholds + (rows.astype(np.uint64) << np.uint64(UNIFORM_BITS))
    return LevelTable(thresholds, keys, starts, guide.ravel(), int(lengths.max()) - 1)


def poisson_levels(levels: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """k ~ Poisson(lam·v/255) independently for every uint8 value v in `levels`; uint16, same shape."""
    table = level_table(float(lam))
    flat = levels.ravel()
    cell = _cells(flat.size, rng)
    k = table.guide[(flat.astype(np.intp) << GUIDE_BITS) | cell]
    unsure = np.flatnonzero(k >= _HOLDS_THRESHOLD)
    k &= _HOLDS_THRESHOLD - 1
    if unsure.size:
        low = rng.integers(0, 1 << _SHIFT, size=unsure.size, dtype=np.uint64)
        r = (cell[unsure].astype(np.uint64) << np.uint64(_SHIFT)) | low
        # one comparison settles most; the rest (tail cells hold many thresholds) by binary search
        rows = table.starts[flat[unsure]]
        first = table.thresholds[rows + k[unsure]] <= r
        k[unsure] += first
        more = first & (table.thresholds[rows + k[unsure]] <= r)
        if more.any():
            rest_levels = flat[unsure[more]]
            queries = r[more] + (rest_levels.astype(np.uint64) << np.uint64(UNIFORM_BITS))
            k[unsure[more]] = np.searchsorted(table.keys, queries, side="right") - table.starts[rest_levels]
    return k.reshape(levels.shape)


def _cells(n: int, rng: np.random.Generator) -> np.ndarray:
    """The top 12 bits of n uniforms r (uint16), cut from the 16-bit lanes of uniform 64-bit words:
    a third of the cost of n bounded draws. r's 41 low bits are independent of them, so they
    are drawn later, and only where they matter (the cell holds a threshold)."""
    words = rng.integers(0, 1 << 64, size=-(-n // 4), dtype=np.uint64)
    return words.view(np.uint16)[:n] & np.uint16(_CELLS - 1)


def poisson_levels_supported(lam: float) -> bool:
    return 0 < lam <= MAX_LAMBDA and math.isfinite(lam)
