"""Overlap coefficients and their cut, for many lists of image sets at once, against set
arithmetic with Python float division, exactly.

`cut_overlaps` counts the lists of up to 128 sets together and each larger list on its
own, with its largest sets (hubs) through a sparse-dense product and only the pairs that
can reach the cut divided; the community meta-graph counts the images of merged
communities from per-image bit patterns. Every path must give the plain definition's bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from stages.metashift.communities import build_community_graph
from stages.metashift.metagraph import EDGE_CUT, cut_overlaps, intersection_counts, overlap_coefficients


def _sets(rng: np.random.Generator, n: int, width: int, hubs: bool = True) -> list[np.ndarray]:
    """n image sets over `width` images: mostly small, every ninth covering much of the
    span (a hub), one empty, one nested in another."""
    sets = []
    for i in range(n):
        size = rng.integers(width // 4, width) if hubs and i % 9 == 4 else rng.integers(1, 40)
        sets.append(np.unique(rng.integers(0, width, size)))
    if n > 3:
        sets[1] = np.zeros(0, np.int64)
        sets[2] = sets[-1][::2].copy()
    return sets


def _plain(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(|A ∩ B|, |A ∩ B| / min(|A|, |B|)) by Python sets, 0 where a set is empty."""
    plain = [set(s.tolist()) for s in sets]
    counts = np.array([[float(len(a & b)) for b in plain] for a in plain]).reshape(len(sets), len(sets))
    overlaps = np.array([[len(a & b) / min(len(a), len(b)) if a and b else 0.0 for b in plain] for a in plain]).reshape(
        len(sets), len(sets)
    )
    return counts, overlaps


def _cut(overlaps: np.ndarray, edge_cut: float) -> np.ndarray:
    cut = overlaps.copy()
    cut[cut < edge_cut] = 0.0
    np.fill_diagonal(cut, 0.0)
    return cut


@pytest.mark.parametrize("width", [60, 400, 100_000])  # dense, sparse, a span far wider than the entries
def test_cut_overlaps_of_many_lists_equal_set_arithmetic(width):
    rng = np.random.default_rng(width)
    lists = [_sets(rng, n, width, hubs=width < 100_000) for n in (0, 1, 2, 7, 64, 128, 129, 180)]
    plain = [_plain(sets)[1] for sets in lists]
    for edge_cut in (EDGE_CUT, 0.05, None):
        for sets, overlaps, found in zip(lists, plain, cut_overlaps(lists, edge_cut)):
            expected = overlaps.copy() if edge_cut is None else _cut(overlaps, edge_cut)
            if edge_cut is None:
                np.fill_diagonal(expected, [1.0 if len(s) else 0.0 for s in sets])
            assert found.dtype == np.float64 and found.shape == (len(sets), len(sets))
            assert np.array_equal(found, expected), (len(sets), edge_cut)


@pytest.mark.parametrize("n", [3, 129])
def test_counts_and_coefficients_of_one_list(n):
    sets = _sets(np.random.default_rng(n), n, 500)
    counts, overlaps = _plain(sets)
    np.fill_diagonal(overlaps, [1.0 if len(s) else 0.0 for s in sets])
    assert np.array_equal(intersection_counts(sets), counts)
    assert np.array_equal(overlap_coefficients(sets), overlaps)


def test_a_pair_exactly_at_the_cut_stays_an_edge_in_a_large_list():
    """130 sets are counted on their own, where only pairs sharing enough images are divided."""
    sets = [np.arange(1000 + 30 * i, 1000 + 30 * i + 25) for i in range(130)]  # disjoint
    sets[0] = np.arange(25)
    sets[1] = np.r_[0:5, 100:125]  # 5 of 25 shared with sets[0]: exactly 0.2, an edge
    sets[2] = np.arange(200, 226)
    sets[3] = np.r_[200:205, 300:321]  # 5 of 26 shared with sets[2]: below 0.2, cut
    weights = cut_overlaps([sets])[0]
    assert weights[0, 1] == weights[1, 0] == 0.2
    assert weights[2, 3] == weights[3, 2] == 0.0
    assert np.count_nonzero(weights) == 2


@pytest.mark.parametrize("groups", [3, 17])  # bit patterns up to 16 communities, unions beyond
def test_community_graph_overlaps_are_those_of_the_unions(groups):
    rng = np.random.default_rng(groups)
    subsets = {f"c{i}": s for i, s in enumerate(_sets(rng, 40, 300))}
    names = list(subsets)
    label = rng.integers(0, groups, len(names))
    communities = {f"g{j}": [names[i] for i in np.flatnonzero(label == j)] for j in range(groups)}
    communities["empty"] = []
    graph = build_community_graph("x", communities, subsets)
    unions = [
        np.unique(np.concatenate([subsets[c] for c in members])) if members else np.zeros(0, np.int64)
        for members in communities.values()
    ]
    _, overlaps = _plain(unions)
    assert graph.sizes.tolist() == [len(u) for u in unions]
    assert np.array_equal(graph.weights, _cut(overlaps, EDGE_CUT))
