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



def test_an_unperturbed_image_is_stored_unchanged():
    clean = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    for norm in ("linf", "l2"):
        stored, achieved = quantise_within_budget(clean, clean / 255.0, norm, 4 / 255)
        assert stored.dtype == np.uint8 and np.array_equal(stored, clean)
        assert achieved == {"linf": 0.0, "linf_levels": 0, "l2": 0.0}


def test_linf_whole_level_budget_is_kept_in_full():
    clean = np.full((2, 2, 3), 100, np.uint8)
    # ε = 8/255 is exactly 8 levels: a perturbation of 8 levels is within budget, 9 is clamped to 8
    stored, achieved = quantise_within_budget(clean, (clean + 8.0) / 255.0, "linf", 8 / 255)
    assert np.all(stored == 108) and achieved["linf_levels"] == 8
    stored, _ = quantise_within_budget(clean, (clean - 9.0) / 255.0, "linf", 8 / 255)
    assert np.all(stored == 92)


def l2_case(changes, budget_squared):
    clean = np.full((1, len(changes), 1), 100, np.uint8)
    change = np.array(changes, dtype=float).reshape(1, -1, 1)
    stored, achieved = quantise_within_budget(clean, (clean + change) / 255.0, "l2",
                                              math.sqrt(budget_squared) / 255)
    assert stored.dtype == np.uint8
    assert achieved["l2"] <= math.sqrt(budget_squared) / 255 + 1e-12
    return (stored.reshape(-1).astype(int) - 100).tolist()


@pytest.mark.parametrize("changes, budget_squared, expected", [
    # rint [2, 1, 1, 1], 7 vs 4: pulling the 2 back (gain 3) lands exactly on the budget: nothing more moves
    ([1.6, 0.9, 0.9, 0.9], 4.0, [1, 1, 1, 1]),
    # rint [2, 2] (1.5 and 2.5 round half to even), 8 vs 4.5: two pull-backs (3 + 3), one each, worst first
    ([1.5, 2.5], 4.5, [1, 1]),
    # rint [3], 9 vs 6.76: one level back (gain 5), not to 1
    ([2.6], 6.76, [2]),
    # rint [3], 9 vs 1.5: one component pulled back twice, over two rounds
    ([2.6], 1.5, [1]),
    # rint [1, 2], 5 vs 4.5: an excess below one level squared is still pulled back
    ([0.9, 1.5], 4.5, [1, 1]),
    # no excess at all: equal to the budget is within it
    ([3.0, 4.0], 25.0, [3, 4]),
])
def test_l2_pull_back_exact_small_cases(changes, budget_squared, expected):
    assert l2_case(changes, budget_squared) == expected


def test_l2_pull_back_ties_go_to_the_first_components():
    # 20 components rounded up by 0.1 or 0.4: the five pull-backs take the first five 0.4 ones (a sort that
    # is not stable picks other tied components once there are more than 16)
    changes = [0.6, 0.9, 0.9, 0.9, 0.6, 0.6, 0.9, 0.9, 0.6, 0.6, 0.9, 0.6, 0.6, 0.9, 0.6, 0.6, 0.9, 0.9, 0.6, 0.6]
    pulled = [i for i, step in enumerate(l2_case(changes, 15.5)) if step == 0]
    assert pulled == [0, 4, 5, 8, 9]


def test_the_budget_check_catches_a_broken_pull_back(monkeypatch):
    """The final check is made on the stored image, with a 1e-9 float tolerance and no more."""
    import stages.adversarial.attacks as attacks
    from stages.adversarial.attacks import BudgetError

    monkeypatch.setattr(attacks, "_pull_back_l2", lambda step, change, levels: step)
    clean = np.full((1, 4, 1), 100, np.uint8)
    adversarial = (clean + 0.6) / 255.0                 # rint 1 level each: L2 2 levels, L∞ 1 level
    with pytest.raises(BudgetError, match=r"^quantised l2 perturbation 0\.007843 exceeds the budget 0\.004706$"):
        quantise_within_budget(clean, adversarial, "l2", 1.2 / 255)
    at_tolerance = 2 / 255 - 1e-9
    assert at_tolerance + 1e-9 == 2 / 255
    stored, achieved = quantise_within_budget(clean, adversarial, "l2", at_tolerance)
    assert achieved["l2"] == 2 / 255 and np.all(stored == 101)
    with pytest.raises(BudgetError):
        quantise_within_budget(clean, adversarial, "l2", 2 / 255 - 3e-9)


def test_achieved_norms_of_an_empty_image():
    empty = np.zeros((0, 0, 3), np.uint8)
    assert achieved_norms(empty, empty) == {"linf": 0.0, "linf_levels": 0, "l2": 0.0}
