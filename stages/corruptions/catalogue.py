"""ImageNet-C severity table: which raw parameters each severity 1..5 means.

Values are the published ones (Hendrycks & Dietterich 2019, `imagecorruptions`
1.1.2). Each entry maps a float32 [0, 1] HxWxC image, the level's parameters
and a generator to the corrupted image plus any per-sample values it drew
(e.g. a motion-blur angle), which end up in provenance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.corruptions import ops

Drawn = dict[str, float]
Apply = Callable[[np.ndarray, Any, np.random.Generator], tuple[np.ndarray, Drawn]]


@dataclass(frozen=True)
class Corruption:
    name: str
    levels: tuple  # parameters for severities 1..5
    apply: Apply
    random: bool  # whether the result depends on the seed
    # Optional exact shortcut on uint8 pixels for ops that need no float image (JPEG, resizing, tables).
    on_pixels: Callable[[np.ndarray, Any], np.ndarray] | None = None


def _plain(op: Callable[..., np.ndarray], random: bool) -> Apply:
    """Adapter for ops whose level is one value or a tuple of positional values."""
    def apply(x: np.ndarray, level: Any, rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
        args = level if isinstance(level, tuple) else (level,)
        return (op(x, *args, rng) if random else op(x, *args)), {}
    return apply


def _motion_blur(x: np.ndarray, level: tuple, rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
    angle = float(rng.uniform(-45, 45))
    return ops.motion_blur(x, *level, angle=angle), {"angle": round(angle, 6)}


def _zoom_blur(x: np.ndarray, level: tuple, rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
    return ops.zoom_blur(x, np.arange(*level)), {}


def _snow(x: np.ndarray, level: tuple, rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
    angle = float(rng.uniform(-135, -45))
    return ops.snow(x, *level, angle=angle, rng=rng), {"angle": round(angle, 6)}


def _spatter(x: np.ndarray, level: tuple, rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
    *values, mud = level
    return ops.spatter(x, *values, mud=bool(mud), rng=rng), {}


def _elastic(x: np.ndarray, level: float, rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
    # alpha scales with a 250 px reference size; the smoothing and the raw shift follow the image size.
    h, w = x.shape[:2]
    return ops.elastic_transform(x, 250 * level, (0.01 * h, 0.01 * w), 0.005 * h, rng), {}


CATALOGUE: dict[str, Corruption] = {c.name: c for c in [
    Corruption("gaussian_noise", (.08, .12, .18, .26, .38), _plain(ops.gaussian_noise, True), True),
    Corruption("shot_noise", (60, 25, 12, 5, 3), _plain(ops.shot_noise, True), True),
    Corruption("impulse_noise", (.03, .06, .09, .17, .27), _plain(ops.impulse_noise, True), True),
    Corruption("defocus_blur", ((3, .1), (4, .5), (6, .5), (8, .5), (10, .5)),
               _plain(ops.defocus_blur, False), False),
    Corruption("glass_blur", ((.7, 1, 2), (.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
               _plain(ops.glass_blur, True), True),
    Corruption("motion_blur", ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), _motion_blur, True),
    # (start, stop, step) of np.arange: the published factor ranges, stop exclusive.
    Corruption("zoom_blur", ((1, 1.11, .01), (1, 1.16, .01), (1, 1.21, .02), (1, 1.26, .02), (1, 1.31, .03)),
               _zoom_blur, False),
    # (mean, std, zoom, threshold, streak radius, streak sigma, image blend)
    Corruption("snow", ((.1, .3, 3, .5, 10, 4, .8), (.2, .3, 2, .5, 12, 4, .7), (.55, .3, 4, .9, 12, 8, .7),
                        (.55, .3, 4.5, .85, 12, 8, .65), (.55, .3, 2.5, .85, 12, 12, .55)), _snow, True),
    Corruption("frost", ((1, .4), (.8, .6), (.7, .7), (.65, .7), (.6, .75)), _plain(ops.frost, True), True),
    Corruption("fog", ((1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)), _plain(ops.fog, True), True),
    Corruption("brightness", (.1, .2, .3, .4, .5), _plain(ops.brightness, False), False),
    Corruption("contrast", (.4, .3, .2, .1, .05), _plain(ops.contrast, False), False,
               ops.contrast_pixels),
    Corruption("elastic_transform", (.05, .065, .085, .1, .12), _elastic, True),
    Corruption("pixelate", (.6, .5, .4, .3, .25), _plain(ops.pixelate, False), False,
               ops.pixelate_pixels),
    Corruption("jpeg_compression", (25, 18, 15, 10, 7), _plain(ops.jpeg, False), False,
               ops.jpeg_pixels),
    Corruption("speckle_noise", (.15, .2, .35, .45, .6), _plain(ops.speckle_noise, True), True),
    Corruption("gaussian_blur", (1, 2, 3, 4, 6), _plain(ops.gaussian_blur, False), False),
    # (mean, std, smoothing sigma, threshold, intensity, mud?) — water for 1-3, mud for 4-5
    Corruption("spatter", ((.65, .3, 4, .69, .6, 0), (.65, .3, 3, .68, .6, 0), (.65, .3, 2, .68, .5, 0),
                           (.65, .3, 1, .65, 1.5, 1), (.67, .4, 1, .65, 1.5, 1)), _spatter, True),
    Corruption("saturate", ((.3, 0), (.1, 0), (2, 0), (5, .1), (20, .2)), _plain(ops.saturate, False), False),
]}

CORRUPTIONS: list[str] = list(CATALOGUE)
COMMON = CORRUPTIONS[:15]
EXTRA = CORRUPTIONS[15:]


def _check(name: str, severity: int) -> Corruption:
    if name not in CATALOGUE:
        raise ValueError(f"unknown corruption {name!r}; expected one of: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not (isinstance(severity, (int, np.integer)) and 1 <= severity <= 5):
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return CATALOGUE[name]


def corrupt_pixels(pixels: np.ndarray, name: str, severity: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
    """Corrupt a uint8 HxWxC image at `severity`; returns (uint8 image, drawn values)."""
    entry = _check(name, severity)
    level = entry.levels[severity - 1]
    if entry.on_pixels is not None:
        return entry.on_pixels(pixels, level), {}
    x = np.multiply(pixels, np.float32(1 / 255), dtype=np.float32)
    out, drawn = entry.apply(x, level, rng)
    return ops.to_uint8(out), drawn


def apply_corruption(x: np.ndarray, name: str, severity: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, Drawn]:
    """Corrupt a float32 [0, 1] HxWxC image at `severity`; returns (image, drawn values)."""
    entry = _check(name, severity)
    return entry.apply(x, entry.levels[severity - 1], rng)
