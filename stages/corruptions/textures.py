"""Procedural textures for the weather corruptions: plasma haze and frost.

Frost is synthesised (no image files): a cloudy plasma base in blue-grey with
fern-like ice crystals drawn as branching anti-aliased needles, calibrated to
the brightness of photographed window frost (mean ≈ 0.45–0.6, blue > green > red).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

FROST_TINT = np.array([0.84, 0.92, 1.0], np.float32)  # RGB; frost photos are blue-grey
_SUBPIXEL_BITS = 4


def plasma_fractal(size: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square fractal on a periodic size×size grid, normalised to [0, 1].

    `size` must be a power of two. Each halving of the step adds uniform noise
    whose amplitude shrinks by wibble_decay² per level, so a larger decay gives
    a smoother haze.
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma_fractal size must be a power of two >= 2, got {size}")
    grid = np.zeros((size, size), np.float64)
    step, amplitude = size, 1.0
    while step >= 2:
        half = step // 2
        corners = grid[0::step, 0::step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half::step, half::step] = square / 4 + rng.uniform(-amplitude, amplitude, square.shape)
        centres = grid[half::step, half::step]
        # Edge midpoints average their two corners and the two neighbouring centres.
        top = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=0)
        grid[0::step, half::step] = top / 4 + rng.uniform(-amplitude, amplitude, top.shape)
        left = corners + np.roll(corners, -1, axis=0) + centres + np.roll(centres, 1, axis=1)
        grid[half::step, 0::step] = left / 4 + rng.uniform(-amplitude, amplitude, left.shape)
        step, amplitude = half, amplitude / wibble_decay**2
    grid -= grid.min()
    return grid / grid.max()


def _segments(starts: np.ndarray, angles: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, 2, 2) segment end points (x, y) from start points, angles (radians), lengths."""
    ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.stack([starts, ends], axis=1)


def _dendrites(h: int, w: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Stems with paired side branches (ferns), plus loose short needles."""
    side = min(h, w)
    n_stems = max(8, h * w // 500)
    n_branch = 7
    origin = rng.uniform([0, 0], [w, h], size=(n_stems, 2))
    heading = rng.uniform(0, 2 * math.pi, n_stems)
    stem_len = side * rng.uniform(0.05, 0.16, n_stems)
    stems = _segments(origin, heading, stem_len)
    # Side branches leave the stem at ±(40..70)° and shorten toward the tip.
    along = np.linspace(0.15, 0.95, n_branch)
    base = origin[:, None, :] + (along[None, :, None] * stem_len[:, None, None]
                                 * np.stack([np.cos(heading), np.sin(heading)], axis=1)[:, None, :])
    spread = np.deg2rad(rng.uniform(40, 70, (n_stems, n_branch)))
    branch_len = stem_len[:, None] * (1.05 - along)[None, :] * rng.uniform(0.3, 0.6, (n_stems, n_branch))
    branches = [
        _segments(base.reshape(-1, 2), (heading[:, None] + sign * spread).ravel(), branch_len.ravel())
        for sign in (-1.0, 1.0)
    ]
    n_needles = h * w // 60
    needles = _segments(rng.uniform([0, 0], [w, h], size=(n_needles, 2)),
                        rng.uniform(0, 2 * math.pi, n_needles), side * rng.uniform(0.01, 0.04, n_needles))
    return [stems, *branches, needles]


def _draw(canvas: np.ndarray, segments: np.ndarray, value: float) -> None:
    points = np.round(segments * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.polylines(canvas, list(points), False, value, 1, cv2.LINE_AA, _SUBPIXEL_BITS)


def frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 float32 frost texture in [0, 1]."""
    size = 1 << max(1, math.ceil(math.log2(max(h, w))))
    haze = plasma_fractal(size, 1.8, rng)[:h, :w].astype(np.float32)
    crystals = np.zeros((h, w), np.float32)
    for segments, value in zip(_dendrites(h, w, rng), (0.9, 0.7, 0.7, 0.5)):
        _draw(crystals, segments, value)
    glow = cv2.GaussianBlur(crystals, (0, 0), 1.5)
    texture = 0.25 + 0.35 * haze + 0.45 * crystals + 0.6 * glow
    return np.clip(texture[..., None] * FROST_TINT, 0.0, 1.0)
