"""Thresholds at their exact values: which side of every `>=` / `>` the documented rule puts them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.filters.base import Threshold
from stages.filters.dedup import Dedup, DedupParams, duplicates_of_earlier, nearest_earlier
from stages.filters.rules import Rule, keep_mask, rejection_reason

# --- filter thresholds: pass when min <= value <= max ------------------------------------------------


@pytest.mark.parametrize("value, reason", [
    (28.739, None),                                    # exactly the minimum passes
    (35.0, None),                                      # exactly the maximum passes
    # one ulp past a bound: the reason prints the digits that show it failing
    (np.nextafter(28.739, 0), "clip 28.738999999999997 < 28.739"),
    (np.nextafter(35.0, 99), "clip 35.00000000000001 > 35"),
    (math.nan, "clip nan"),
])
def test_threshold_bounds_are_inclusive(value, reason):
    threshold = Threshold(min=28.739, max=35.0)
    assert threshold.failure("clip", float(value)) == reason
    mask = keep_mask({"clip": np.array([value])}, {"clip": threshold}, Rule())
    assert mask.tolist() == [reason is None]


def test_k_of_n_keeps_at_exactly_k_passing_scores():
    thresholds = {name: Threshold(min=1.0) for name in "abcd"}
    rule = Rule(kind="k_of_n", k=2, of=list("abcd"))
    two = {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0}           # a and b sit exactly on the bound
    one = {"a": 1.0, "b": 0.999, "c": 0.0, "d": 0.0}
    assert rejection_reason(two, thresholds, rule) is None
    assert rejection_reason(one, thresholds, rule) == (
        "b 0.999 < 1; c 0 < 1; d 0 < 1 (1 of 4 passed, need 2)")
    columns = {name: np.array([two[name], one[name]]) for name in "abcd"}
    assert keep_mask(columns, thresholds, rule).tolist() == [True, False]


# --- dedup: a Hamming distance below min_distance is a duplicate -------------------------------------


def _hashes(*flipped: int, width: int = 16) -> np.ndarray:
    """Row 0 all zeros; row i has its first flipped[i-1] bits set."""
    bits = np.zeros((len(flipped) + 1, width), dtype=bool)
    for row, count in enumerate(flipped, start=1):
        bits[row, :count] = True
    return bits


def test_nearest_earlier_counts_exact_hamming_distances_across_groups():
    bits = _hashes(5, 4, 7)
    assert nearest_earlier(bits, ["a", "b", "c", "a"]).tolist() == [16, 5, 1, 2]
    assert nearest_earlier(bits, ["a", "a", "a", "a"]).tolist() == [16, 16, 16, 16]


def test_a_distance_of_exactly_min_distance_is_not_a_duplicate():
    bits = np.zeros((3, 16), dtype=bool)
    bits[1, :5] = True          # 5 from row 0
    bits[2, 12:] = True         # 4 from row 0, 9 from row 1
    groups = ["a", "b", "c"]
    assert duplicates_of_earlier(bits, groups, min_distance=5) == {2: (0, 4)}
    assert duplicates_of_earlier(bits, groups, min_distance=6) == {1: (0, 5), 2: (0, 4)}
    assert duplicates_of_earlier(bits, groups, min_distance=4) == {}


def test_the_dedup_rule_keeps_a_sample_at_exactly_min_distance():
    dedup = Dedup(DedupParams(filter="dedup", min_distance=5))
    threshold = dedup.default_thresholds()["dedup_distance"]
    assert threshold.failure("dedup_distance", 5.0) is None
    assert threshold.failure("dedup_distance", 4.0) == "dedup_distance 4 < 5"


# --- MetaShift: overlaps below 0.2 are cut, 0.2 itself is an edge ------------------------------------


def test_an_overlap_of_exactly_the_edge_cut_stays_an_edge():
    from stages.metashift.metagraph import EDGE_CUT, build_meta_graph

    assert EDGE_CUT == 0.2
    # overlap coefficient = |A ∩ B| / min(|A|, |B|): one shared image of five is exactly 0.2
    at_cut = {"a": np.arange(5), "b": np.array([0, 20, 21, 22, 23, 24, 25]), "c": np.arange(30, 40)}
    graph = build_meta_graph("cat", at_cut, dim=1)
    assert graph.weights[0, 1] == graph.weights[1, 0] == 0.2
    below = {"a": np.arange(6), "b": np.array([0, 20, 21, 22, 23, 24, 25]), "c": np.arange(30, 40)}
    assert build_meta_graph("cat", below, dim=1).weights[0, 1] == 0.0      # 1/6 < 0.2: cut
