"""The stored uint8 perturbation: exact budgets after rounding, for L∞ and L2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.adversarial.attacks import achieved_norms, quantise_within_budget


def test_linf_rounding_past_the_budget_is_clamped():
    clean = np.full((4, 4, 3), 100, np.uint8)
    # 5.5 levels rounds (half to even) up to 6 > floor(5.5): the clamp must bring it back to 5
    stored, achieved = quantise_within_budget(clean, (clean + 5.5) / 255.0, "linf", 5.5 / 255)
    assert np.all(stored == 105) and achieved["linf_levels"] == 5
    stored, _ = quantise_within_budget(clean, (clean - 5.5) / 255.0, "linf", 5.5 / 255)
    assert np.all(stored == 95)
    # 4.5 rounds to even 4: within budget without clamping
    stored, _ = quantise_within_budget(clean, (clean + 4.5) / 255.0, "linf", 4.5 / 255)
    assert np.all(stored == 104)


def test_l2_pulls_back_only_the_worst_rounded_components():
    clean = np.full((1, 4, 1), 100, np.uint8)
    change = np.array([0.6, 0.9, 1.5, 2.0]).reshape(1, 4, 1)
    # rint -> [1, 1, 2, 2], squared norm 10; budget sqrt(0.36+0.81+2.25+4) = 2.724 levels (7.42)
    budget = float(np.linalg.norm(change)) / 255
    stored, achieved = quantise_within_budget(clean, (clean + change) / 255.0, "l2", budget)
    # worst rounded: 0.6 -> 1 (+0.4), then 1.5 -> 2 (+0.5 is worse): order 2 (+0.5), 0 (+0.4), 1 (+0.1)
    # pulling index 2 back (2 -> 1) lowers 10 by 3 to 7 <= 7.42: nothing else moves
    assert stored.reshape(-1).tolist() == [101, 101, 101, 102]
    assert achieved["l2"] == pytest.approx(math.sqrt(7) / 255)
    assert achieved["l2"] <= budget


def test_l2_negative_components_move_towards_the_clean_image():
    clean = np.full((1, 3, 1), 50, np.uint8)
    change = np.array([-1.5, -0.5, 0.0]).reshape(1, 3, 1)  # rint -> [-2, -0, 0]: norm 2 > 1.58
    stored, _ = quantise_within_budget(clean, (clean + change) / 255.0, "l2", float(np.linalg.norm(change)) / 255)
    assert stored.reshape(-1).tolist() == [49, 50, 50]


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_l2_keeps_at_least_995_permille_of_the_budget_and_never_more(epsilon):
    rng = np.random.default_rng(7)
    kept = []
    for _ in range(40):
        clean = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
        direction = rng.normal(size=clean.shape) * (rng.random(clean.shape) < 0.3)  # sparse like PGD-L2
        float_adv = clean / 255.0 + direction / np.linalg.norm(direction) * epsilon
        float_adv = np.clip(float_adv, 0, 1)
        on_sphere = np.linalg.norm(float_adv - clean / 255.0)
        stored, achieved = quantise_within_budget(clean, float_adv, "l2", epsilon)
        assert achieved["l2"] <= epsilon
        assert achieved["l2"] == pytest.approx(np.linalg.norm(stored / 255.0 - clean / 255.0))
        kept.append(achieved["l2"] / on_sphere)
    assert min(kept) >= 0.995, min(kept)


def test_out_of_range_float_pixels_are_clipped_before_the_norm():
    clean = np.array([[[254], [1]]], np.uint8)
    stored, achieved = quantise_within_budget(clean, np.array([[[1.2], [-0.3]]]), "linf", 8 / 255)
    assert stored.reshape(-1).tolist() == [255, 0]
    assert achieved["linf_levels"] == 1


def test_achieved_norms_exact_values():
    clean = np.zeros((2, 2, 1), np.uint8)
    adv = np.array([[[3], [0]], [[4], [0]]], np.uint8)
    assert achieved_norms(clean, adv) == {"linf": 4 / 255, "linf_levels": 4, "l2": 5 / 255}

