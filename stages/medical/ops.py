"""MedMNIST-C corruptions that differ from ImageNet-C, on uint8 HxWxC images (C = 1 or 3).

The colour ones reproduce Pillow's `ImageEnhance` and torchvision's
`adjust_gamma` / `gaussian_blur` arithmetic as 256-entry lookup tables or
single OpenCV calls; the acquisition artefacts (stain deposits, air bubbles,
a dark vignette, handwritten characters) draw only from the explicit `rng`.
Sizes of drawn artefacts are in pixels of a 224×224 image, as published.
Each artefact returns the image and the details it drew, for provenance.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# Side (px) of the ink blots of each stain-deposit severity; the count of blots
# comes from the dataset's table.
STAIN_BLOT_SIDES = (16, 20, 24, 28, 32)
BUBBLE_ALPHA, BUBBLE_BORDER_ALPHA, BUBBLE_BORDER = 100, 130, 2


def _lut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(x, table.astype(np.uint8)).reshape(x.shape)


def _integers(rng: np.random.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] inclusive; `low` when the range is empty (tiny images)."""
    return int(rng.integers(low, max(low, high) + 1))


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


def blot_masks(count: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """`count` binary (0/1 uint8) ink blots, each filling about half of a side×side square.

    A radial falloff perturbed by smoothed noise, cut at a random level, gives
    a ragged, mostly convex stain; a few satellite drops splash around it.
    """
    coords = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    falloff = 1.0 - np.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2)
    noise = rng.standard_normal((side, side, count), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), side / 10).reshape(side, side, count)
    noise /= np.maximum(noise.std(axis=(0, 1)), 1e-6)
    cut = rng.uniform(0.05, 0.25, size=count).astype(np.float32)
    masks = ((falloff[..., None] + 0.18 * noise) > cut).astype(np.uint8)
    masks = np.ascontiguousarray(masks.transpose(2, 0, 1))
    drops = rng.integers(0, side, size=(count, 3, 2))
    for mask, centres, n in zip(masks, drops, rng.integers(0, 4, size=count)):
        for cy, cx in centres[:n]:
            cv2.circle(mask, (int(cx), int(cy)), max(1, side // 16), 1, thickness=-1)
    return masks


def stain_deposit(x: np.ndarray, max_marks: int, severity: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Black ink blots: 1..max_marks masks multiplying the image by (1 − mask)."""
    out = x.copy()
    h, w = x.shape[:2]
    side = min(STAIN_BLOT_SIDES[severity - 1], h, w)
    count = _integers(rng, 1, max_marks)
    for mask in blot_masks(count, side, rng):
        top, left = _integers(rng, 10, h - side - 10), _integers(rng, 10, w - side - 10)
        top, left = min(top, h - side), min(left, w - side)
        out[top:top + side, left:left + side] *= (1 - mask)[..., None]
    return out, {"marks": count, "blot_side": side}


def _paste_white(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Pillow's paste of white through an alpha layer holding only 0 and the bubble alphas:
    its rounded integer blend, as one lookup table per alpha level."""
    out = x.copy()
    values = np.arange(256, dtype=np.uint32)
    for level in (BUBBLE_ALPHA, BUBBLE_BORDER_ALPHA):
        blended = values * (255 - level) + 255 * level + 128
        table = ((blended + (blended >> 8)) >> 8).astype(np.uint8)
        out = cv2.copyTo(cv2.LUT(x, table), (alpha == level).view(np.uint8), out).reshape(x.shape)
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
    for _ in range(count):
        radius = _integers(rng, 3, max_radius)
        cx, cy = _integers(rng, radius, w - radius), _integers(rng, radius, h - radius)
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
    words = []
    for _ in range(_integers(rng, 1, max_words)):
        letters = _integers(rng, 3, max_letters)
        scale = _integers(rng, 14, round(max_font_scale * 100)) / 100
        word = bytes((rng.integers(0, 26, size=letters) + ord("a")).astype(np.uint8)).decode()
        origin = (_integers(rng, 10, w - 8 * letters), _integers(rng, 10, h - 10))
        rgb = rng.integers(0, 256, size=3)
        colour = tuple(int(c) for c in rgb) if x.shape[2] == 3 else (int(luma(rgb.reshape(1, 1, 3))[0, 0]),)
        canvas = out if x.shape[2] == 3 else out[..., 0]
        cv2.putText(canvas, word, origin, cv2.FONT_HERSHEY_DUPLEX, scale, colour, 1, cv2.LINE_AA)
        words.append(word)
    return out, {"words": words}
