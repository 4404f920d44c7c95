"""The ImageNet-C severity table, pinned value by value.

The literals below are the parameters `imagecorruptions` 1.1.2 uses
(`corruptions.py`, the `c = [...]` list of each corruption, severity 1..5),
written out here so that a changed constant fails without the reference
package installed. Zoom blur is stored as the (start, stop, step) of the
`np.arange` the reference builds; elastic α is stored as the multiplier of
the reference's `250 * m`.
"""

from __future__ import annotations

import numpy as np
import pytest

from stages.corruptions.catalogue import CATALOGUE, COMMON, CORRUPTIONS, EXTRA, corrupt_pixels

IMAGENET_C = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": (0.05, 0.065, 0.085, 0.1, 0.12),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
}

# how many zoom factors the reference's np.arange yields at severity 1..5, and the largest;
# float steps make severity 1 include its stop value 1.11
ZOOM_FACTORS = (12, 16, 11, 13, 11)
ZOOM_LARGEST = (1.11, 1.15, 1.20, 1.24, 1.30)
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost",
          "fog", "elastic_transform", "speckle_noise", "spatter"}


def test_the_catalogue_names_the_19_corruptions_in_the_published_order():
    assert CORRUPTIONS == list(IMAGENET_C)
    assert COMMON == CORRUPTIONS[:15] and EXTRA == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]


@pytest.mark.parametrize("name", list(IMAGENET_C))
def test_every_severity_uses_the_published_parameters(name):
    levels = CATALOGUE[name].levels
    assert len(levels) == 5
    for severity, (ours, published) in enumerate(zip(levels, IMAGENET_C[name]), start=1):
        assert ours == published, f"{name} severity {severity}"
        assert type(ours) is type(published) or isinstance(ours, (int, float)), f"{name} severity {severity}"


def test_zoom_levels_expand_to_the_published_number_of_factors():
    counts = tuple(len(np.arange(*level)) for level in CATALOGUE["zoom_blur"].levels)
    assert counts == ZOOM_FACTORS
    largest = tuple(float(np.arange(*level)[-1]) for level in CATALOGUE["zoom_blur"].levels)
    assert largest == pytest.approx(ZOOM_LARGEST, abs=1e-9)


def test_only_the_stochastic_corruptions_are_marked_random():
    assert {name for name, entry in CATALOGUE.items() if entry.random} == RANDOM


@pytest.mark.parametrize("severity, expected", [(1, (76, 178)), (3, (102, 153)), (5, (121, 134))])
def test_contrast_applies_the_level_of_its_severity(severity, expected):
    # half black, half white: mean 0.5, so c = .4/.2/.05 gives 0.5 ± 0.5c
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 255
    out, _ = corrupt_pixels(image, "contrast", severity, np.random.default_rng(0))
    assert (int(out[0, 0, 0]), int(out[0, 7, 0])) == expected


@pytest.mark.parametrize("severity, kept", [(1, 19), (3, 12), (5, 8)])
def test_pixelate_down_scales_by_the_level_of_its_severity(severity, kept):
    # a 32-px ramp boxed down to int(32·c) px keeps that many distinct columns
    ramp = np.repeat(np.repeat((np.arange(32) * 8).astype(np.uint8)[None, :, None], 32, 0), 3, 2)
    out, _ = corrupt_pixels(ramp, "pixelate", severity, np.random.default_rng(0))
    assert len(np.unique(out[0, :, 0])) == kept


# --- pixelate: Pillow's BOX resampling, restated from its definition ---------------------------------


def _box_coefficients(in_size: int, out_size: int) -> list[tuple[int, np.ndarray]]:
    """Pillow's precompute_coeffs for the box filter, then its 22-bit fixed-point weights: output
    pixel x averages the source pixels i with −½ < (i − centre + ½)/filterscale ≤ ½."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    rows = []
    for x in range(out_size):
        centre = (x + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), in_size)
        taps = np.array([1.0 if -0.5 < (i + first - centre + 0.5) * (1.0 / filterscale) <= 0.5 else 0.0
                         for i in range(last - first)])
        rows.append((first, np.floor(0.5 + taps / taps.sum() * (1 << 22)).astype(np.int64)))
    return rows


def _box_resize_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    moved = np.moveaxis(image.astype(np.int64), axis, 0)
    out = []
    for first, weights in _box_coefficients(moved.shape[0], size):
        total = (1 << 21) + np.tensordot(weights, moved[first:first + len(weights)], axes=1)
        out.append(np.clip(total >> 22, 0, 255))
    return np.moveaxis(np.stack(out), 0, axis).astype(np.uint8)


def _nearest_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Pillow's NEAREST (ImagingScaleAffine): source index int(xo), xo starting at ½·in/out and
    advanced by in/out per output pixel, by repeated float addition as Pillow does."""
    scale = image.shape[axis] / size
    positions = np.cumsum(np.r_[scale * 0.5, np.full(size - 1, scale)])
    return image.take(positions.astype(int), axis=axis)


def _pixelate_reference(image: np.ndarray, factor: float, enlarge: str) -> np.ndarray:
    """Pillow resizes the width first, then the height, rounding to uint8 after each pass;
    imagecorruptions enlarges with NEAREST, medmnistc with BOX. (Pillow 13 sometimes runs the
    height pass first on non-square images, which can move a value by one; the inputs below
    are square, where the order written in Resample.c holds.)"""
    h, w = image.shape[:2]
    small = _box_resize_axis(_box_resize_axis(image, int(w * factor), 1), int(h * factor), 0)
    back = _box_resize_axis if enlarge == "box" else _nearest_axis
    return back(back(small, w, 1), h, 0)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_pixelate_matches_pillows_box_resampling(severity):
    image = np.random.default_rng(severity).integers(0, 256, (45, 45, 3), dtype=np.uint8)
    out, _ = corrupt_pixels(image, "pixelate", severity, np.random.default_rng(0))
    assert np.array_equal(out, _pixelate_reference(image, IMAGENET_C["pixelate"][severity - 1], "nearest"))


def test_medical_pixelate_matches_pillows_box_resampling_both_ways():
    from stages.medical import corrupt

    grey = np.random.default_rng(3).integers(0, 256, (40, 40), dtype=np.uint8)
    for severity, factor in enumerate((0.3, 0.25, 0.2, 0.15, 0.1), start=1):
        out = corrupt(grey, "chestmnist", "pixelate", severity)
        assert np.array_equal(out, _pixelate_reference(grey[..., None], factor, "box")[..., 0]), severity
    colour = np.random.default_rng(4).integers(0, 256, (37, 37, 3), dtype=np.uint8)
    for severity, factor in enumerate((0.7, 0.5, 0.4, 0.3, 0.25), start=1):
        out = corrupt(colour, "dermamnist", "pixelate", severity)
        assert np.array_equal(out, _pixelate_reference(colour, factor, "box")), severity


# --- how a level reaches its op, on exact values --------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (40, 32), interpolation=cv2.INTER_AREA)   # 32 x 40: h != w


def test_the_float_path_scales_by_255_and_rounds_back(photo):
    from stages.corruptions import ops

    out, drawn = corrupt_pixels(photo, "gaussian_blur", 2, np.random.default_rng(0))
    expected = ops.to_uint8(ops.gaussian_blur(photo.astype(np.float32) * np.float32(1 / 255), 2))
    assert drawn == {} and np.array_equal(out, expected)


def test_float_images_get_the_level_of_their_severity(photo):
    from stages.corruptions import ops
    from stages.corruptions.catalogue import apply_corruption

    x = photo.astype(np.float32) / 255
    out, _ = apply_corruption(x, "contrast", 2, np.random.default_rng(0))
    assert np.array_equal(out, ops.contrast(x, 0.3))
    out, _ = apply_corruption(x, "impulse_noise", 4, np.random.default_rng(3))
    assert np.array_equal(out, ops.impulse_noise(x, 0.17, np.random.default_rng(3)))


@pytest.mark.parametrize("name, severity, low, high", [("motion_blur", 2, -45, 45), ("snow", 4, -135, -45)])
def test_the_drawn_angle_is_uniform_in_the_published_range_and_recorded(photo, name, severity, low, high):
    out, drawn = corrupt_pixels(photo, name, severity, np.random.default_rng(20))
    angle = float(np.random.default_rng(20).uniform(low, high))
    assert drawn == {"angle": round(angle, 6)} and round(angle, 6) != round(angle, 7)   # rounded to 6 places


def test_elastic_scales_alpha_by_250_and_smooths_per_axis(photo):
    from stages.corruptions import ops

    x = photo.astype(np.float32) / 255
    out, _ = corrupt_pixels(photo, "elastic_transform", 3, np.random.default_rng(8))
    expected = ops.elastic_transform(x, 250 * 0.085, (0.01 * 32, 0.01 * 40), 0.005 * 32, np.random.default_rng(8))
    assert np.array_equal(out, ops.to_uint8(expected))


@pytest.mark.parametrize("severity, mud", [(3, False), (4, True)])
def test_spatter_uses_mud_from_severity_4(photo, severity, mud):
    from stages.corruptions import ops

    x = photo.astype(np.float32) * np.float32(1 / 255)
    out, _ = corrupt_pixels(photo, "spatter", severity, np.random.default_rng(2))
    *values, _ = IMAGENET_C["spatter"][severity - 1]
    assert np.array_equal(out, ops.to_uint8(ops.spatter(x, *values, mud=mud, rng=np.random.default_rng(2))))
    other = ops.to_uint8(ops.spatter(x, *values, mud=not mud, rng=np.random.default_rng(2)))
    assert not np.array_equal(out, other)


def test_unknown_names_and_severities_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"^unknown corruption 'fogg'; expected one of: gaussian_noise, shot_noise, "
                                         r"impulse_noise, defocus_blur"):
        corrupt_pixels(np.zeros((32, 32, 3), np.uint8), "fogg", 1, np.random.default_rng(0))
    for bad in (0, 6, True, 2.0):
        with pytest.raises(ValueError, match=r"^severity must be an integer in 1\.\.5, got "):
            corrupt_pixels(np.zeros((32, 32, 3), np.uint8), "contrast", bad, np.random.default_rng(0))
