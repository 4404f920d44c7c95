"""Medical (MedMNIST-C) stage: every catalogue entry runs, deterministic ones match their formulas."""

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageEnhance

from pipeline.core.manifest import ManifestError, parse_release
from stages.base import Batch
from stages.corruptions import ops as common_ops
from stages.medical import CATALOGUES, MedicalParams, MedicalStage, corrupt, prepare
from stages.medical import ops as medical_ops
from stages.medical.catalogue import RGB_DATASETS, SEVERITIES, level

SIDE = 64


def sample_image(channels: int, side: int = SIDE) -> np.ndarray:
    rgb = cv2.resize(skimage.data.immunohistochemistry()[100:356, 100:356], (side, side),
                     interpolation=cv2.INTER_AREA)
    return rgb if channels == 3 else medical_ops.luma(rgb)[..., None]


def all_entries():
    return [(ds, name) for ds, table in CATALOGUES.items() for name in table]


@pytest.mark.parametrize("dataset", list(CATALOGUES))
def test_every_corruption_at_every_severity_keeps_shape_dtype_and_is_deterministic(dataset):
    channels = 3 if dataset in RGB_DATASETS else 1
    image = sample_image(channels)
    for name in CATALOGUES[dataset]:
        for severity in SEVERITIES:
            out = corrupt(image, dataset, name, severity, seed=5)
            assert out.dtype == np.uint8 and out.shape == (SIDE, SIDE, channels), (name, severity)
            assert np.array_equal(out, corrupt(image, dataset, name, severity, seed=5)), (name, severity)
            assert not np.array_equal(out, image) or name == "black_corner", (name, severity)


def mean_distance(dataset: str, name: str, severity: int, image: np.ndarray, seeds=range(6)) -> float:
    return float(np.mean([np.abs(corrupt(image, dataset, name, severity, seed=s).astype(float) - image).mean()
                          for s in seeds]))


# tables that are not monotonic as published
NOT_MONOTONIC = {("dermamnist", "black_corner")}


@pytest.mark.parametrize("dataset", [d for d in CATALOGUES if d not in ("organcmnist", "organsmnist")])
def test_distance_from_clean_grows_with_severity(dataset):
    image = sample_image(3 if dataset in RGB_DATASETS else 1, side=96)
    for name in CATALOGUES[dataset]:
        if (dataset, name) in NOT_MONOTONIC:
            continue
        distances = [mean_distance(dataset, name, s, image) for s in SEVERITIES]
        assert all(b >= a for a, b in zip(distances, distances[1:])), (name, np.round(distances, 2))
        assert distances[-1] > distances[0], name


def test_black_corner_zeroes_exactly_outside_its_radius():
    image = np.full((SIDE, SIDE, 3), 200, np.uint8)
    for severity, multiplier in zip(SEVERITIES, CATALOGUES["dermamnist"]["black_corner"]):
        out = corrupt(image, "dermamnist", "black_corner", severity)
        rows, cols = np.ogrid[:SIDE, :SIDE]
        inside = (rows - 32) ** 2 + (cols - 32) ** 2 <= int(32 * multiplier) ** 2
        assert (out[~inside] == 0).all() and (out[inside] == 200).all()
    # severity 4 (0.90) cuts deeper than 5 (0.95), as published
    assert (corrupt(image, "dermamnist", "black_corner", 4) == 0).sum() > \
        (corrupt(image, "dermamnist", "black_corner", 5) == 0).sum()
    assert corrupt(image, "dermamnist", "black_corner", 1)[32, 0].tolist() == [200, 200, 200]


@pytest.mark.parametrize("gamma", [0.4, 0.9, 1.6, 2.0])
def test_gamma_matches_the_8_bit_formula(gamma):
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    expected = np.floor(255.999 * (np.arange(256) / 255.0) ** gamma).reshape(16, 16, 1)
    assert np.array_equal(medical_ops.gamma_correction(ramp, gamma), expected)


@pytest.mark.parametrize("factor", [0.3, 0.55, 0.85, 1.15, 1.6, 2.0])
@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_and_contrast_equal_pillow_image_enhance(factor, channels):
    image = sample_image(channels)
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    for ours, enhancer in ((medical_ops.enhance_brightness, ImageEnhance.Brightness),
                           (medical_ops.enhance_contrast, ImageEnhance.Contrast)):
        expected = np.asarray(enhancer(pil).enhance(factor)).reshape(image.shape)
        assert np.array_equal(ours(image, factor), expected), (ours.__name__, factor)


def test_bubbles_paste_white_at_alpha_100_with_a_130_rim():
    image = np.full((SIDE, SIDE, 1), 60, np.uint8)
    out, details = medical_ops.bubble(image, 6, 9, np.random.default_rng(3))
    inner = round(60 + (255 - 60) * 100 / 255)   # 136
    rim = round(60 + (255 - 60) * 130 / 255)     # 159
    values, counts = np.unique(out, return_counts=True)
    assert set(values.tolist()) == {60, inner, rim}
    assert 7 <= details["bubbles"] <= 9 and counts[values.tolist().index(inner)] > 7 * 9


def test_bubble_blend_equals_pillow_paste_for_every_value():
    ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    alpha = np.zeros((16, 16), np.uint8)
    alpha[4:8], alpha[8:12] = medical_ops.BUBBLE_ALPHA, medical_ops.BUBBLE_BORDER_ALPHA
    pil = Image.fromarray(ramp)
    pil.paste(Image.new("RGBA", (16, 16), (255, 255, 255, 0)).convert("RGB"), (0, 0), Image.fromarray(alpha))
    np.testing.assert_array_equal(medical_ops._paste_white(ramp, alpha), np.asarray(pil))
    for alpha_level in (medical_ops.BUBBLE_ALPHA, medical_ops.BUBBLE_BORDER_ALPHA):
        every = np.full((16, 16), alpha_level, np.uint8)
        pil = Image.fromarray(ramp)
        pil.paste((255, 255, 255), (0, 0, 16, 16), Image.fromarray(every))
        np.testing.assert_array_equal(medical_ops._paste_white(ramp, every), np.asarray(pil))


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_and_shot_noise_on_uint8_equal_their_float_round_trips(channels):
    dataset = "chestmnist" if channels == 1 else "dermamnist"
    image = sample_image(channels)
    as_float = image * np.float32(1 / 255)
    for severity in SEVERITIES:
        quality = level(dataset, "jpeg_compression", severity)
        expected = common_ops.to_uint8(common_ops.jpeg(as_float, quality))
        np.testing.assert_array_equal(corrupt(image, dataset, "jpeg_compression", severity), expected)
        lam = level(dataset, "shot_noise", severity)
        # grey images draw their noise on three channels and reduce it to luma
        noisy_input = as_float if channels == 3 else np.repeat(as_float, 3, axis=2)
        expected = common_ops.to_uint8(common_ops.shot_noise(noisy_input, lam, np.random.default_rng(severity)))
        expected = expected if channels == 3 else medical_ops.luma(expected)[..., None]
        np.testing.assert_array_equal(corrupt(image, dataset, "shot_noise", severity, seed=severity), expected)


def test_kernel_gaussian_blur_uses_the_torchvision_sigma_of_its_kernel_size():
    impulse = np.zeros((31, 31, 1), np.uint8)
    impulse[15, 15] = 255
    out = medical_ops.kernel_gaussian_blur(impulse, 7)[..., 0].astype(float)
    sigma = 0.3 * ((7 - 1) * 0.5 - 1) + 0.8
    taps = np.exp(-np.arange(-3, 4) ** 2 / (2 * sigma**2))
    expected = 255 * np.outer(taps, taps) / taps.sum() ** 2
    assert np.abs(out[12:19, 12:19] - expected).max() <= 1
    assert out[:12].sum() == 0 and out[19:].sum() == 0


def test_stain_deposit_only_blackens_pixels_and_counts_marks():
    image = np.full((96, 96, 3), 180, np.uint8)
    out, details = medical_ops.stain_deposit(image, 5, 5, np.random.default_rng(0))
    assert set(np.unique(out).tolist()) == {0, 180}
    assert 1 <= details["marks"] <= 5 and details["blot_side"] == 32
    assert (out == 0).all(axis=2).sum() >= 0.3 * 32 * 32


def test_characters_draw_recorded_lowercase_words_and_stay_grey_on_grey():
    out, details = medical_ops.characters(sample_image(1, 128), 4, 9, 0.17, np.random.default_rng(1))
    assert out.shape == (128, 128, 1) and 1 <= len(details["words"]) <= 4
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 9 for w in details["words"])
    assert (out != sample_image(1, 128)).sum() > 20


def test_grey_images_stay_single_channel_and_plain_2d_input_stays_2d():
    gray = sample_image(1)[..., 0]
    assert corrupt(gray, "chestmnist", "gaussian_noise", 2).shape == (SIDE, SIDE)
    assert corrupt(gray[..., None], "chestmnist", "gamma_corr_up", 2).shape == (SIDE, SIDE, 1)
    assert corrupt(gray, "pathmnist", "stain_deposit", 2).shape == (SIDE, SIDE, 3)


def test_prepare_converts_resizes_and_notes_what_it_did():
    rgb = sample_image(3)
    x, notes = prepare(rgb, "chestmnist", 224)
    assert x.shape == (224, 224, 1) and len(notes) == 2
    assert "luma" in notes[0] and "64x64 -> 224x224" in notes[1]
    x, notes = prepare(np.zeros((300, 450, 1), np.uint8), "bloodmnist", 224)
    assert x.shape == (224, 336, 3) and "stacked to RGB" in notes[0]
    same, notes = prepare(rgb, "pathmnist", None)
    assert np.array_equal(same, rgb) and notes == []
    with pytest.raises(ValueError, match="HxWx3"):
        prepare(np.zeros((8, 8, 2), np.uint8), "pathmnist", None)


def test_stage_applies_variant_records_details_and_fails_bad_samples_only():
    stage = MedicalStage(MedicalParams(stage="medical", modality="dermoscopy",
                                       corruptions=["motion_blur", "characters"], severities=[5, 2], size=96))
    variants = stage.variants()
    assert [v.config for v in variants] == ["dermamnist-motion_blur-s2", "dermamnist-motion_blur-s5",
                                            "dermamnist-characters-s2", "dermamnist-characters-s5"]
    assert variants[1].params == {"dataset": "dermamnist", "corruption": "motion_blur", "severity": 5,
                                  "value": (20, 15), "size": 96}
    batch = Batch(keys=["a", "b", "c"], images=[sample_image(3), np.zeros((8, 8, 2), np.uint8), None],
                  seeds=[1, 2, 3])
    out = stage.apply(batch, variants[1])
    assert out.status == ["ok", "error", "error"]
    assert "dermamnist-motion_blur-s5" in out.reason[1] and "2" in out.reason[1]
    assert out.images[0].shape == (96, 96, 3) and -45 <= out.shift[0]["angle"] <= 45
    assert out.shift[0]["notes"] == ["resized 64x64 -> 96x96 (severities are tuned for 224 px)"]
    again = stage.apply(Batch(keys=["a"], images=[sample_image(3)], seeds=[1]), variants[1])
    assert np.array_equal(again.images[0], out.images[0])


def test_unknown_names_fail_validation_naming_the_choices():
    base = {"name": "m", "version": "1", "source": {"kind": "samples"}}
    with pytest.raises(ManifestError, match="dermamnist"):
        parse_release({**base, "shifts": [{"stage": "medical", "catalogue": "dermnist"}]})
    with pytest.raises(ManifestError, match="expected any of pixelate, jpeg_compression"):
        parse_release({**base, "shifts": [{"stage": "medical", "catalogue": "pathmnist",
                                           "corruptions": ["black_corner"]}]})
    with pytest.raises(ManifestError, match="exactly one of catalogue"):
        parse_release({**base, "shifts": [{"stage": "medical"}]})
    with pytest.raises(ManifestError, match="must not repeat"):
        parse_release({**base, "shifts": [{"stage": "medical", "catalogue": "octmnist",
                                           "severities": [2, 2]}]})
    release = parse_release({**base, "shifts": [{"stage": "medical", "modality": "chest_xray"}]})
    assert release.shifts[0].dataset == "chestmnist"


def test_published_values_spot_checks():
    assert level("pneumoniamnist", "shot_noise", 5) == 80
    assert level("chestmnist", "shot_noise", 5) == 5
    assert level("organsmnist", "gamma_corr_up", 5) == 2.0
    assert level("octmnist", "defocus_blur", 1) == (0.5, 0.6)
    assert sum(len(t) for t in CATALOGUES.values()) == 11 + 11 + 15 + 8 + 8 + 6 + 7 + 13 + 13 + 3 * 13
    # np.arange's float rounding includes the end point 1.11, as in the published data
    assert len(np.arange(*level("dermamnist", "zoom_blur", 1))) == 12
