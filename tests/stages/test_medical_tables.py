"""The MedMNIST-C catalogues, pinned value by value.

The literals below are the `severity_params` of `medmnistc` 0.1.0
(`corruptions/registry.py`, `CORRUPTIONS_DS`), written out so that a changed
constant fails without the reference package installed. Zoom blur is the
(start, stop, step) of the reference's `np.arange`. Where the reference lists
a sixth value (retinamnist defocus_blur, chest/pneumonia gaussian_blur) it is
never used: its dataset builder loops over severities 0..4.
"""

from __future__ import annotations

import numpy as np
import pytest

from stages.medical import MedicalParams, MedicalStage, corrupt
from stages.medical.catalogue import CATALOGUES, GROUPS, MODALITIES, RGB_DATASETS, level

MEDMNIST_C = {
    "pathmnist": {
        "pixelate": (0.8, 0.6, 0.4, 0.3, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3)),
        "motion_blur": ((5, 5), (10, 5), (15, 5), (15, 8), (15, 12)),
        "brightness_up": (1.1, 1.15, 1.2, 1.22, 1.25),
        "brightness_down": (0.85, 0.8, 0.75, 0.72, 0.7),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "saturate": (0.05, 0.1, 0.15, 0.2, 0.25),
        "stain_deposit": (1, 2, 3, 4, 5),
        "bubble": ((7, 15), (10, 15), (12, 15), (15, 20), (17, 25)),
    },
    "bloodmnist": {
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((2, 0.01), (3, 0.1), (4, 0.1), (5, 0.1), (6, 0.1)),
        "motion_blur": ((3, 3), (5, 5), (10, 5), (10, 7), (10, 9)),
        "brightness_up": (1.1, 1.2, 1.3, 1.35, 1.4),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.15, 1.2, 1.25, 1.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "saturate": (0.05, 0.1, 0.15, 0.17, 0.2),
        "stain_deposit": (1, 2, 3, 3, 3),
        "bubble": ((5, 10), (7, 10), (10, 10), (12, 12), (15, 12)),
    },
    "dermamnist": {
        "pixelate": (0.7, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (30, 20, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
        "motion_blur": ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.8, 0.7, 0.6, 0.5, 0.4),
        "black_corner": (1.1, 1.05, 1.0, 0.9, 0.95),
        "characters": ((1, 6, 0.14), (2, 7, 0.15), (3, 8, 0.16), (4, 9, 0.17), (6, 10, 0.18)),
    },
    "retinamnist": {
        "pixelate": (0.8, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (30, 25, 20, 10, 5),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.1, 0.15, 0.2, 0.25, 0.3),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),  # a 6th is unused
        "motion_blur": ((8, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "tissuemnist": {
        "pixelate": (0.4, 0.3, 0.2, 0.15, 0.1),
        "jpeg_compression": (25, 20, 15, 10, 7),
        "impulse_noise": (0.01, 0.015, 0.02, 0.025, 0.03),
        "gaussian_blur": (13, 15, 17, 21, 25),
        "brightness_up": (1.3, 1.4, 1.5, 1.6, 1.7),
        "brightness_down": (0.8, 0.7, 0.6, 0.5, 0.4),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "octmnist": {
        "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
        "jpeg_compression": (30, 15, 10, 7, 5),
        "speckle_noise": (0.15, 0.3, 0.4, 0.5, 0.6),
        "defocus_blur": ((0.5, 0.6), (1, 0.5), (1.5, 0.1), (2.0, 0.5), (2.5, 0.1)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "contrast_down": (0.6, 0.4, 0.3, 0.2, 0.15),
    },
    "breastmnist": {
        "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "speckle_noise": (0.1, 0.15, 0.2, 0.25, 0.3),
        "motion_blur": ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)),
        "brightness_up": (1.4, 1.5, 1.6, 1.8, 2.0),
        "brightness_down": (0.55, 0.5, 0.45, 0.4, 0.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "chestmnist": {
        "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "gaussian_blur": (3, 5, 7, 9, 11),  # a 6th is unused
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "pneumoniamnist": {
        "pixelate": (0.8, 0.7, 0.6, 0.5, 0.4),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.05, 0.06, 0.07, 0.08),
        "speckle_noise": (0.05, 0.07, 0.1, 0.15, 0.2),
        "impulse_noise": (0.005, 0.01, 0.013, 0.017, 0.02),
        "shot_noise": (300, 200, 150, 100, 80),
        "gaussian_blur": (3, 5, 7, 9, 11),  # a 6th is unused
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "organamnist": {
        "pixelate": (0.7, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.05, 0.1, 0.2, 0.3, 0.4),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
        "shot_noise": (200, 100, 50, 25, 15),
        "gaussian_blur": (11, 13, 15, 17, 21),
        "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
        "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.6),
        "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "organcmnist": {
        "pixelate": (0.7, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.05, 0.1, 0.2, 0.3, 0.4),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
        "shot_noise": (200, 100, 50, 25, 15),
        "gaussian_blur": (11, 13, 15, 17, 21),
        "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
        "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.6),
        "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "organsmnist": {
        "pixelate": (0.7, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.05, 0.1, 0.2, 0.3, 0.4),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
        "shot_noise": (200, 100, 50, 25, 15),
        "gaussian_blur": (11, 13, 15, 17, 21),
        "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
        "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.6),
        "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
}


def test_the_twelve_catalogues_list_the_published_corruptions_in_order():
    assert list(CATALOGUES) == list(MEDMNIST_C)
    for dataset, table in MEDMNIST_C.items():
        assert list(CATALOGUES[dataset]) == list(table), dataset


@pytest.mark.parametrize("dataset", list(MEDMNIST_C))
def test_every_severity_uses_the_published_parameters(dataset):
    for name, published in MEDMNIST_C[dataset].items():
        for severity, value in enumerate(published, start=1):
            assert level(dataset, name, severity) == value, f"{dataset} {name} severity {severity}"


def test_colour_datasets_groups_and_modalities_are_the_published_ones():
    assert RGB_DATASETS == {"bloodmnist", "dermamnist", "pathmnist", "retinamnist"}
    assert GROUPS == {
        "digital": ("pixelate", "jpeg_compression"),
        "noise": ("gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise"),
        "blur": ("defocus_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
        "color": ("brightness_up", "brightness_down", "contrast_up", "contrast_down", "saturate"),
        "task-specific": ("stain_deposit", "bubble", "black_corner", "characters",
                          "gamma_corr_up", "gamma_corr_down"),
    }
    assert set(MODALITIES.values()) <= set(MEDMNIST_C)
    assert MODALITIES["dermoscopy"] == "dermamnist" and MODALITIES["chest_xray"] == "chestmnist"


def test_variants_carry_the_level_of_their_severity():
    stage = MedicalStage(MedicalParams(stage="medical", catalogue="dermamnist",
                                       corruptions=["contrast_down", "black_corner"]))
    values = {v.config: v.params["value"] for v in stage.variants()}
    assert values["dermamnist-contrast_down-s3"] == 0.6
    assert values["dermamnist-black_corner-s4"] == 0.9
    assert len(values) == 10


@pytest.mark.parametrize("severity, expected", [(1, (20, 180)), (3, (39, 160)), (5, (60, 140))])
def test_contrast_down_applies_the_level_of_its_severity(severity, expected):
    # grey halves 0 and 200: mean luma 100, so factor f maps v to floor(100 + f·(v − 100)) in
    # float32, as Pillow's ImageEnhance.Contrast does (0.6 → 39.999998 → 39; Pillow gives the same)
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 200
    out = corrupt(image, "dermamnist", "contrast_down", severity)
    assert (int(out[0, 0, 0]), int(out[0, 7, 0])) == expected


@pytest.mark.parametrize("dataset, severity, expected", [
    ("chestmnist", 1, 110), ("chestmnist", 5, 150), ("breastmnist", 5, 200), ("organamnist", 3, 140)])
def test_brightness_up_applies_the_level_of_its_severity(dataset, severity, expected):
    out = corrupt(np.full((4, 4), 100, np.uint8), dataset, "brightness_up", severity)
    assert out.shape == (4, 4) and int(out[0, 0]) == expected


# --- grey catalogues: noise as MedMNIST-C's builder applied it (RGB, then L) -------------------------

LUMA = np.array([0.299, 0.587, 0.114])


def _pillow_luma(rgb: np.ndarray) -> np.ndarray:
    """Pillow's 'L' conversion written from its definition: ITU-R 601-2 weights, 16-bit fixed point."""
    weights = np.array([19595, 38470, 7471], np.int64)
    return ((rgb.astype(np.int64) @ weights + 0x8000) >> 16).astype(np.uint8)


@pytest.mark.parametrize("dataset, severity", [("chestmnist", 3), ("pneumoniamnist", 5), ("organamnist", 1)])
def test_grey_gaussian_noise_has_the_spread_of_three_channel_draws_reduced_to_luma(dataset, severity):
    sigma = level(dataset, "gaussian_noise", severity) * 255
    out = corrupt(np.full((224, 224), 128, np.uint8), dataset, "gaussian_noise", severity, seed=3)
    # independent N(0, σ) per channel, weighted by the luma weights: σ·|w| = 0.6686·σ
    expected = sigma * float(np.sqrt((LUMA**2).sum()))
    assert float(out.astype(np.float64).std()) == pytest.approx(expected, rel=0.03)
    assert float(out.astype(np.float64).std()) < 0.75 * sigma    # a one-channel draw would give σ


def test_grey_impulse_noise_takes_the_values_of_salted_rgb_triplets_reduced_to_luma():
    out = corrupt(np.full((224, 224), 128, np.uint8), "chestmnist", "impulse_noise", 5, seed=0)
    triplets = np.array(np.meshgrid([0, 128, 255], [0, 128, 255], [0, 128, 255])).reshape(3, -1).T
    allowed = set(_pillow_luma(triplets).tolist())
    values = set(np.unique(out).tolist())
    assert values <= allowed
    assert len(values) > 10      # a one-channel draw gives only 0, 128 and 255
    # each channel is hit with probability .17, so about 1 − .83³ = 43 % of pixels change
    assert float((out != 128).mean()) == pytest.approx(1 - 0.83**3, abs=0.01)


@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise"])
def test_grey_noise_is_the_luma_of_the_same_noise_on_the_stacked_image(name):
    from stages.medical.transforms import transform

    grey = np.random.default_rng(5).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    value = level("chestmnist", name, 4)
    out, _ = transform(grey, name, value, 4, np.random.default_rng(9))
    rgb, _ = transform(np.repeat(grey, 3, axis=2), name, value, 4, np.random.default_rng(9))
    assert out.shape == (32, 32, 1)
    assert np.array_equal(out[..., 0], _pillow_luma(rgb))
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])     # the channels drew independently


def test_grey_deterministic_corruptions_stay_on_one_channel_unchanged():
    from stages.medical.transforms import transform

    grey = np.random.default_rng(5).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    out, _ = transform(grey, "gamma_corr_up", 1.4, 4, np.random.default_rng(0))
    rgb, _ = transform(np.repeat(grey, 3, axis=2), "gamma_corr_up", 1.4, 4, np.random.default_rng(0))
    assert np.array_equal(out[..., 0], rgb[..., 0])


# --- the catalogue's lookups and the transforms' adapters, on exact values -----------------------------


def test_unknown_datasets_corruptions_and_severities_are_named_in_the_error():
    from stages.medical.catalogue import catalogue

    with pytest.raises(KeyError, match=r"unknown MedMNIST dataset 'skinmnist'; expected one of pathmnist, "
                                       r"bloodmnist, dermamnist, "):
        catalogue("skinmnist")
    with pytest.raises(KeyError, match=r"octmnist has no corruption 'bubble'; expected one of pixelate, "
                                       r"jpeg_compression, speckle_noise, defocus_blur, motion_blur, contrast_down"):
        level("octmnist", "bubble", 1)
    with pytest.raises(ValueError, match=r"^severity must be one of \(1, 2, 3, 4, 5\), got 6$"):
        level("octmnist", "pixelate", 6)


def test_motion_blur_records_the_angle_it_drew():
    from stages.medical.transforms import transform

    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _, details = transform(image, "motion_blur", (10, 5), 2, np.random.default_rng(11))
    expected = round(float(np.random.default_rng(11).uniform(-45, 45)), 6)
    assert details == {"angle": expected} and -45 <= expected < 45


def test_float_corruptions_see_values_over_255_and_round_back():
    from stages.corruptions import ops as common
    from stages.medical.transforms import transform

    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))[..., None]     # 8 x 64 x 1
    out, _ = transform(ramp, "zoom_blur", (1, 1.06, 0.02), 1, np.random.default_rng(0))
    as_float = ramp.astype(np.float32) * np.float32(1 / 255)
    assert np.array_equal(out, common.to_uint8(common.zoom_blur(as_float, np.arange(1, 1.06, 0.02))))
    noisy, _ = transform(ramp, "gaussian_noise", 0.0, 1, np.random.default_rng(0))   # σ = 0 returns the input
    assert np.array_equal(noisy, ramp)


def test_saturate_adds_to_hsv_saturation_and_needs_rgb():
    pixel = np.full((2, 2, 3), (200, 100, 100), np.uint8)           # S = 0.5, V = 200
    out = corrupt(pixel, "pathmnist", "saturate", 1)                 # S + 0.05 = 0.55: min = 200·0.45 = 90
    assert out[0, 0].tolist() == [200, 90, 90]
    from stages.medical.transforms import transform

    with pytest.raises(ValueError, match=r"^saturate needs an RGB image, got 1 channel\(s\)$"):
        transform(pixel[..., :1], "saturate", 0.05, 1, np.random.default_rng(0))
