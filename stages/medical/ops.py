"""MedMNIST-C corruptions that differ from ImageNet-C, on uint8 HxWxC images (C = 1 or 3).

The colour ones reproduce Pillow's `ImageEnhance` and torchvision's
`adjust_gamma` / `gaussian_blur` arithmetic as 256-entry lookup tables or
single OpenCV calls; the acquisition artefacts (stain deposits, air bubbles,
a dark vignette, handwritten characters) draw only from the explicit `rng`.
Sizes of drawn artefacts are in pixels of a 224×224 image, as published.
Each artefact returns the image and the details it drew, for provenance.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

# Side (px) of the ink blots of each stain-deposit severity; the count of blots
# comes from the dataset's table.
STAIN_BLOT_SIDES = (16, 20, 24, 28, 32)
BUBBLE_ALPHA, BUBBLE_BORDER_ALPHA, BUBBLE_BORDER = 100, 130, 2


def _lut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(x, table.astype(np.uint8)).reshape(x.shape)


def _integers(rng: np.random.Generator, low, high, size: int | None = None):
    """Uniform integers in [low, high] inclusive (`high` may be an array, one bound per draw);
    `low` where the range is empty (tiny images)."""
    if size is None and np.isscalar(high):
        return int(rng.integers(low, max(low, high) + 1))
    return rng.integers(low, np.maximum(low, high) + 1, size=size)


def luma(x: np.ndarray) -> np.ndarray:
    """Pillow's 'L' conversion (HxW uint8) of an HxWx3 image, ITU-R 601-2 luma in 16-bit
    fixed point; the channel itself when C=1."""
    if x.shape[2] == 1:
        return x[..., 0]
    r, g, b = (x[..., c].astype(np.uint32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


# --- colour ----------------------------------------------------------------------------------------


def _blend_table(base: float, factor: float) -> np.ndarray:
    """Pillow's Image.blend(solid `base`, image, factor) per input value: float32, truncated, clipped."""
    values = np.arange(256, dtype=np.float32)
    blended = np.float32(base) + np.float32(factor) * (values - np.float32(base))
    return np.clip(np.floor(blended), 0, 255)


def enhance_brightness(x: np.ndarray, factor: float) -> np.ndarray:
    """ImageEnhance.Brightness: blend with black, i.e. scale every value by `factor`."""
    return _lut(x, _blend_table(0.0, factor))


def enhance_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """ImageEnhance.Contrast: blend with a flat grey at the rounded mean luma."""
    mean = int(luma(x).mean(dtype=np.float64) + 0.5)
    return _lut(x, _blend_table(mean, factor))


def gamma_correction(x: np.ndarray, gamma: float) -> np.ndarray:
    """Gain-1 gamma as torchvision applies it to 8-bit images: floor(255.999·(v/255)^γ)."""
    table = np.array([int((255 + 1 - 1e-3) * pow(v / 255.0, gamma)) for v in range(256)])
    return _lut(x, table)


def kernel_gaussian_blur(x: np.ndarray, ksize: int) -> np.ndarray:
    """Gaussian blur given by its (odd) kernel size; σ = 0.3·((k−1)/2 − 1) + 0.8 and
    reflected borders, torchvision's defaults."""
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    out = cv2.GaussianBlur(x, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(x.shape)


# --- acquisition artefacts -------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _blot_falloff(side: int) -> np.ndarray:
    """1 − distance from the centre of a side×side square spanning [−1, 1]², HxWx1."""
    coords = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    falloff = (1.0 - np.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2))[..., None]
    falloff.flags.writeable = False
    return falloff


def blot_masks(count: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """`count` binary (0/1 uint8) ink blots, each filling about half of a side×side square.

    A radial falloff perturbed by smoothed noise, cut at a random level, gives
    a ragged, mostly convex stain; a few satellite drops splash around it.
    """
    falloff = _blot_falloff(side)
    noise = rng.standard_normal((side, side, count), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), side / 10).reshape(side, side, count)
    # falloff + 0.18·noise/std(noise) per blot, the std from per-blot sums and
    # sums of squares (two OpenCV passes; NumPy's std makes several)
    flat = noise.reshape(-1, count)
    mean = cv2.reduce(flat, 0, cv2.REDUCE_SUM, dtype=cv2.CV_64F)[0] / len(flat)
    mean_square = cv2.reduce(flat, 0, cv2.REDUCE_SUM2, dtype=cv2.CV_64F)[0] / len(flat)
    noise *= (0.18 / np.maximum(np.sqrt(np.maximum(mean_square - mean**2, 0)), 1e-6)).astype(np.float32)
    noise += falloff
    cut = rng.uniform(0.05, 0.25, size=count).astype(np.float32)
    masks = np.ascontiguousarray((noise > cut).transpose(2, 0, 1)).view(np.uint8)
    # per blot: up to 3 drop centres (y, x) and how many of them to draw
    drops = rng.integers(0, [side] * 6 + [4], size=(count, 7)).tolist()
    for mask, (*centres, n) in zip(masks, drops):
        for cy, cx in zip(centres[0:2 * n:2], centres[1:2 * n:2]):
            cv2.circle(mask, (cx, cy), max(1, side // 16), 1, thickness=-1)
    return masks


def stain_deposit(x: np.ndarray, max_marks: int, severity: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Black ink blots: 1..max_marks masks multiplying the image by (1 − mask)."""
    h, w = x.shape[:2]
    side = min(STAIN_BLOT_SIDES[severity - 1], h, w)
    count = _integers(rng, 1, max_marks)
    masks = blot_masks(count, side, rng)
    # top-left corners uniform on the grid [10, h - side - 10] x [10, w - side - 10], drawn as
    # one cell index each (a draw with one scalar bound is cheaper than one bound per axis)
    rows, cols = max(1, h - side - 19), max(1, w - side - 19)
    stained = np.zeros((h, w), np.uint8)
    for mask, cell in zip(masks, rng.integers(0, rows * cols, size=count).tolist()):
        top, left = min(10 + cell // cols, h - side), min(10 + cell % cols, w - side)
        stained[top:top + side, left:left + side] |= mask
    out = cv2.copyTo(np.zeros_like(x), stained, x.copy()).reshape(x.shape)  # black where stained
    return out, {"marks": count, "blot_side": side}


def _paste_white(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Pillow's paste of white through an alpha layer holding only 0 and the bubble alphas.

    Pillow rounds v + a·(255 − v)/255 to the nearest integer; for a = 100 and
    130 that value is never within 1/255 of a tie, so OpenCV's float
    scale-and-round gives the same bytes (checked for all 256 values in the tests).
    """
    out = x.copy()
    for level in (BUBBLE_ALPHA, BUBBLE_BORDER_ALPHA):
        blended = cv2.convertScaleAbs(x, alpha=1 - level / 255, beta=level)
        out = cv2.copyTo(blended, (alpha == level).view(np.uint8), out).reshape(x.shape)
    return out


def bubble(x: np.ndarray, max_radius: int, max_bubbles: int,
           rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """7..max_bubbles white translucent discs (alpha 100/255) with a 2 px rim (130/255).

    Discs are drawn into one alpha layer, later ones over earlier ones, then
    white is pasted through it.
    """
    h, w = x.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    count = _integers(rng, 7, max_bubbles)
    radii = _integers(rng, 3, max_radius, size=count)
    xs, ys = _integers(rng, radii, w - radii), _integers(rng, radii, h - radii)
    for radius, cx, cy in zip(radii.tolist(), xs.tolist(), ys.tolist()):
        cv2.circle(alpha, (cx, cy), radius + BUBBLE_BORDER, BUBBLE_BORDER_ALPHA, thickness=-1)
        cv2.circle(alpha, (cx, cy), radius, BUBBLE_ALPHA, thickness=-1)
    return _paste_white(x, alpha), {"bubbles": count}


def corner_mask(h: int, w: int, multiplier: float) -> np.ndarray:
    """Boolean HxW disc kept by black_corner: centre (w//2, h//2), radius
    int(multiplier · distance from the centre to the nearest edge)."""
    cy, cx = h // 2, w // 2
    radius = int(min(cx, cy, w - cx, h - cy) * multiplier)
    rows, cols = np.ogrid[:h, :w]
    return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2


def black_corner(x: np.ndarray, multiplier: float) -> np.ndarray:
    """Dermoscope vignette: everything outside the centred disc becomes 0."""
    keep = corner_mask(x.shape[0], x.shape[1], multiplier).view(np.uint8)
    return cv2.bitwise_and(x, x, mask=keep).reshape(x.shape)


def characters(x: np.ndarray, max_words: int, max_letters: int, max_font_scale: float,
               rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """1..max_words random lowercase words (3..max_letters letters, font scale
    0.14..max_font_scale) in random colours, as pen marks on dermoscopy images."""
    out = x.copy()  # C-contiguous, so cv2 draws into it in place
    h, w = x.shape[:2]
    # scalar draws per word (a scalar draw costs a fifth of a small array draw),
    # then every letter and ink colour in one array draw
    layout = []
    for _ in range(_integers(rng, 1, max_words)):
        letters = _integers(rng, 3, max_letters)
        scale = _integers(rng, 14, round(max_font_scale * 100)) / 100
        layout.append((letters, scale, (_integers(rng, 10, w - 8 * letters), _integers(rng, 10, h - 10))))
    total = sum(letters for letters, _, _ in layout)
    draws = rng.integers(0, [26] * total + [256] * 3 * len(layout)).astype(np.uint8)
    text = bytes(draws[:total] + ord("a")).decode()
    inks = draws[total:].reshape(-1, 1, 3)
    inks = (inks[:, 0] if x.shape[2] == 3 else luma(inks)).tolist()
    canvas = out if x.shape[2] == 3 else out[..., 0]
    words, start = [], 0
    for (letters, scale, origin), ink in zip(layout, inks):
        words.append(text[start:start + letters])
        start += letters
        cv2.putText(canvas, words[-1], origin, cv2.FONT_HERSHEY_DUPLEX, scale, ink, 1, cv2.LINE_AA)
    return out, {"words": words}
