"""Every MedMNIST-C corruption by name: uint8 image, table value, severity, rng
-> (uint8 image, drawn details).

Corruptions MedMNIST-C shares with ImageNet-C run on the float primitives of
`stages.corruptions.ops`; those whose arithmetic differs (Pillow-style
brightness/contrast, gamma, saturation shift, kernel-size Gaussian blur) and
the acquisition artefacts come from `stages.medical.ops`.

Grey catalogues: MedMNIST-C's dataset builder converts every image to RGB,
corrupts it and converts grey outputs back to L. For the noises that draw
per value, that means three independent draws averaged by the luma weights
(.299, .587, .114), so the released grey data carries noise with 0.67× the
nominal σ (≈3.5 dB higher PSNR than noise drawn on one channel). The
released data is the benchmark, so grey images get their noise the same way:
on three channels, then reduced to luma. Every other corruption gives the
same bytes either way (equal channels stay equal) and runs on one channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stages.corruptions import ops as common
from stages.medical import ops as medical

Details = dict[str, Any]
Transform = Callable[[np.ndarray, Any, int, np.random.Generator], tuple[np.ndarray, Details]]


def _on_floats(op: Callable[..., np.ndarray], x: np.ndarray, *args: Any) -> np.ndarray:
    # a float32 multiply is ~15x faster than numpy's division by a Python scalar here
    return common.to_uint8(op(x.astype(np.float32) * np.float32(1 / 255), *args))


def _motion_blur(x: np.ndarray, value: Any, severity: int, rng: np.random.Generator):
    radius, sigma = value
    angle = float(rng.uniform(-45, 45))
    return _on_floats(common.motion_blur, x, radius, sigma, angle), {"angle": round(angle, 6)}


def _saturate(x: np.ndarray, shift: float, severity: int, rng: np.random.Generator):
    if x.shape[2] != 3:
        raise ValueError(f"saturate needs an RGB image, got {x.shape[2]} channel(s)")
    return _on_floats(common.saturate, x, 1.0, shift), {}


def _noise(op: Callable[..., np.ndarray]) -> Transform:
    return lambda x, value, severity, rng: (_on_floats(op, x, value, rng), {})


def _plain(op: Callable[[np.ndarray, Any], np.ndarray]) -> Transform:
    return lambda x, value, severity, rng: (op(x, value), {})


TRANSFORMS: dict[str, Transform] = {
    "pixelate": lambda x, v, s, rng: (common.pixelate_pixels(x, v, enlarge="box"), {}),
    "jpeg_compression": lambda x, v, s, rng: (common.jpeg_pixels(x, v), {}),
    "gaussian_noise": _noise(common.gaussian_noise),
    "speckle_noise": _noise(common.speckle_noise),
    "impulse_noise": _noise(common.impulse_noise),
    "shot_noise": lambda x, v, s, rng: (common.shot_noise_pixels(x, v, rng), {}),
    "defocus_blur": lambda x, v, s, rng: (_on_floats(common.defocus_blur, x, *v), {}),
    "motion_blur": _motion_blur,
    "zoom_blur": lambda x, v, s, rng: (_on_floats(common.zoom_blur, x, np.arange(*v)), {}),
    "gaussian_blur": _plain(medical.kernel_gaussian_blur),
    "brightness_up": _plain(medical.enhance_brightness),
    "brightness_down": _plain(medical.enhance_brightness),
    "contrast_up": _plain(medical.enhance_contrast),
    "contrast_down": _plain(medical.enhance_contrast),
    "saturate": _saturate,
    "gamma_corr_up": _plain(medical.gamma_correction),
    "gamma_corr_down": _plain(medical.gamma_correction),
    "black_corner": _plain(medical.black_corner),
    "stain_deposit": lambda x, v, s, rng: medical.stain_deposit(x, v, s, rng),
    "bubble": lambda x, v, s, rng: medical.bubble(x, *v, rng),
    "characters": lambda x, v, s, rng: medical.characters(x, *v, rng),
}


# corruptions drawing independently per value, which on grey images run on three channels
NOISES_VIA_RGB = frozenset({"gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise"})


def transform(x: np.ndarray, corruption: str, value: Any, severity: int,
              rng: np.random.Generator) -> tuple[np.ndarray, Details]:
    """Apply one corruption at its raw table `value` to a uint8 HxWxC image."""
    if x.shape[2] == 1 and corruption in NOISES_VIA_RGB:
        out, details = TRANSFORMS[corruption](np.repeat(x, 3, axis=2), value, severity, rng)
        return medical.luma(out)[..., None], details
    out, details = TRANSFORMS[corruption](x, value, severity, rng)
    return np.ascontiguousarray(out, dtype=np.uint8).reshape(x.shape), details
