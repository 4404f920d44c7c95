"""Sweeps, reports and the community meta-graph on hand-built graphs whose distances are read off a line."""

from __future__ import annotations

import numpy as np
import pytest

from stages.metashift.communities import CommunityGraph, build_community_graph, detect_communities
from stages.metashift.distances import distance_report, sweep_mixes
from stages.metashift.official import pairwise_distances
from stages.metashift.scene_graphs import MetaShiftError

NAMES = ["a", "b", "t", "c", "d", "e", "f", "g"]
ON_LINE = [1, 1, 0, 2, 2, 3, 3, 4]       # distance to t is the coordinate itself


def line_graph(members: list[list[str]] | None = None, weights: np.ndarray | None = None) -> CommunityGraph:
    positions = np.zeros((len(NAMES), 5))
    positions[:, 0] = ON_LINE
    return CommunityGraph(cls="dog", names=list(NAMES), members=members or [[n] for n in NAMES],
                          sizes=np.arange(len(NAMES)) + 10,
                          weights=np.zeros((len(NAMES), len(NAMES))) if weights is None else weights,
                          positions=positions)


def test_pairwise_distances_exact():
    positions = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert pairwise_distances(positions).tolist() == [[0.0, 5.0, 10.0], [5.0, 0.0, 5.0], [10.0, 5.0, 0.0]]


def test_sweep_picks_evenly_spaced_ranks_of_the_sorted_mixes():
    picked = sweep_mixes(line_graph(), "t", mix_size=2, count=4)
    # 21 mixes of 2 out of 7; ranks round(linspace(0, 20, 4)) = 0, 7, 13, 20
    assert picked == [{"train": ["a", "b"], "test": "t", "d": 1.0}, {"train": ["b", "e"], "test": "t", "d": 2.0},
                      {"train": ["c", "f"], "test": "t", "d": 2.5}, {"train": ["f", "g"], "test": "t", "d": 3.5}]
    assert sweep_mixes(line_graph(), "t") == picked        # defaults: mixes of 2, four of them


def test_sweep_ties_keep_the_order_of_the_combinations():
    every = sweep_mixes(line_graph(), "t", mix_size=2, count=21)
    assert ["".join(m["train"]) for m in every] == [
        "ab", "ac", "ad", "bc", "bd", "ae", "af", "be", "bf", "cd", "ag", "bg", "ce", "cf", "de", "df",
        "cg", "dg", "ef", "eg", "fg"]
    assert [m["d"] for m in every] == [1.0] + [1.5] * 4 + [2.0] * 5 + [2.5] * 6 + [3.0] * 3 + [3.5] * 2


def test_sweep_smallest_and_largest_requests():
    assert sweep_mixes(line_graph(), "t", mix_size=1, count=1) == [{"train": ["a"], "test": "t", "d": 1.0}]
    whole = sweep_mixes(line_graph(), "t", mix_size=7, count=3)
    assert whole == [{"train": ["a", "b", "c", "d", "e", "f", "g"], "test": "t", "d": 16 / 7}]
    assert len(sweep_mixes(line_graph(), "t", mix_size=2, count=4, max_mixes=21)) == 4
    with pytest.raises(MetaShiftError, match=r"^21 mixes of 2 out of 7 nodes; lower mix_size$"):
        sweep_mixes(line_graph(), "t", mix_size=2, count=4, max_mixes=20)


@pytest.mark.parametrize("mix_size, count", [(0, 4), (2, 0)])
def test_sweep_rejects_empty_requests(mix_size, count):
    with pytest.raises(MetaShiftError, match=rf"^mix_size and count must be >= 1, got {mix_size} and {count}$"):
        sweep_mixes(line_graph(), "t", mix_size=mix_size, count=count)


def test_sweep_needs_enough_nodes_besides_the_test():
    with pytest.raises(MetaShiftError, match=r"^dog\(t\): need 8 connected nodes besides an embedded test node; "
                                             r"7 available$"):
        sweep_mixes(line_graph(), "t", mix_size=8)


def test_node_names_the_communities_holding_a_context():
    graph = line_graph(members=[["a", "x"], ["b", "x"], ["t"], ["c"], ["d"], ["e"], ["f"], ["g"]])
    assert graph.node("b") == 1 and graph.node("t") == 2
    with pytest.raises(MetaShiftError, match=r"^dog\(x\) is in several communities \(dog\(a\), dog\(b\)\) "
                                             r"of the dog community meta-graph$"):
        graph.node("x")
    with pytest.raises(MetaShiftError, match=r"^dog\(y\) is in no community of the dog community meta-graph$"):
        graph.node("y")


def test_community_graph_json():
    weights = np.zeros((8, 8))
    weights[0, 3] = weights[3, 0] = 0.5
    weights[2, 7] = weights[7, 2] = 0.25
    doc = line_graph(members=[["a", "x"]] + [[n] for n in NAMES[1:]], weights=weights).to_json()
    assert {k: doc[k] for k in ("class", "edge_cut", "layout_dim")} == {"class": "dog", "edge_cut": 0.2,
                                                                        "layout_dim": 5}
    assert doc["nodes"][0] == {"community": "dog(a)", "members": ["dog(a)", "dog(x)"], "size": 10,
                               "position": [1.0, 0.0, 0.0, 0.0, 0.0]}
    assert [n["community"] for n in doc["nodes"]] == [f"dog({n})" for n in NAMES]
    assert doc["edges"] == [{"source": "a", "target": "c", "weight": 0.5},
                            {"source": "t", "target": "g", "weight": 0.25}]


def test_distance_report_on_a_community_graph():
    graph = line_graph(members=[["a", "x"]] + [[n] for n in NAMES[1:]])
    report = distance_report(graph, ["x", "a", "e"], ["t", "g"])
    assert report["train"] == ["dog(x)", "dog(a)", "dog(e)"] and report["test"] == ["dog(t)", "dog(g)"]
    assert report["d"] == {"dog(t)": 2.0, "dog(g)": 2.0}        # x and a are one community: (1 + 3) / 2, (3 + 1) / 2
    assert report["communities"] == {"train": ["dog(a)", "dog(e)"], "test": ["dog(t)", "dog(g)"]}
    assert report["pairs"] == [{"train": "dog(a)", "test": "dog(t)", "distance": 1.0},
                               {"train": "dog(e)", "test": "dog(t)", "distance": 3.0},
                               {"train": "dog(a)", "test": "dog(g)", "distance": 3.0},
                               {"train": "dog(e)", "test": "dog(g)", "distance": 1.0}]
    assert report["meta_graph"] == graph.to_json()


def test_detected_communities_order_nodes_by_subset_name():
    """Node order is that of the names cls(context): `tennis racket` sorts before `tennis`, which decides the
    tie-break of the greedy merge and the name of a community whose largest members tie."""
    path = {"tennis": np.arange(0, 30), "tennis ball": np.arange(15, 45), "tennis racket": np.arange(30, 60)}
    assert detect_communities("x", path) == {"tennis ball": ["tennis ball", "tennis racket", "tennis"]}
    two = {"tennis": np.arange(0, 30), "tennis racket": np.arange(100, 130)}
    assert list(detect_communities("x", two)) == ["tennis racket", "tennis"]


def test_a_community_without_subsets_is_an_empty_node():
    subsets = {"x": np.arange(10), "y": np.arange(5, 20), "z": np.arange(30, 40)}
    graph = build_community_graph("dog", {"x": ["x", "y"], "none": [], "z": ["z"]}, subsets)
    assert graph.names == ["x", "none", "z"] and graph.members == [["x", "y"], [], ["z"]]
    assert graph.sizes.tolist() == [20, 0, 10]
    assert not graph.weights[1].any() and not graph.weights[:, 1].any()
