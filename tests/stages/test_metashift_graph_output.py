"""What `metashift subsets` writes per class, pinned on a graph small enough to know by hand:
the meta-graph JSON fields and the picture's layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stages.metashift.metagraph import EDGE_CUT, EMBED_DIM, MetaGraph, _layout, draw_meta_graph


@pytest.fixture()
def graph() -> MetaGraph:
    """dog: bed - sofa - rug a path (weights 0.5, 0.25), lamp isolated; two communities."""
    weights = np.zeros((4, 4))
    weights[0, 2] = weights[2, 0] = 0.5  # bed - sofa
    weights[2, 1] = weights[1, 2] = 0.25  # sofa - rug
    return MetaGraph("dog", ["bed", "rug", "sofa", "lamp"], np.array([30, 40, 50, 25]), weights, [[0, 2], [1], [3]])


def test_meta_graph_json_fields(graph):
    doc = graph.to_json(embedding=True)
    assert list(doc) == ["class", "edge_cut", "nodes", "edges", "communities", "embedding_dim", "eigenvalues"]
    assert doc["class"] == "dog" and doc["edge_cut"] == EDGE_CUT == 0.2 and doc["embedding_dim"] == EMBED_DIM == 5
    assert [{k: n[k] for k in ("context", "subset", "size", "community")} for n in doc["nodes"]] == [
        {"context": "bed", "subset": "dog(bed)", "size": 30, "community": 0},
        {"context": "rug", "subset": "dog(rug)", "size": 40, "community": 1},
        {"context": "sofa", "subset": "dog(sofa)", "size": 50, "community": 0},
        {"context": "lamp", "subset": "dog(lamp)", "size": 25, "community": 2},
    ]
    assert doc["edges"] == [
        {"source": "bed", "target": "sofa", "weight": 0.5},
        {"source": "rug", "target": "sofa", "weight": 0.25},
    ]
    assert doc["communities"] == [["bed", "sofa"], ["rug"], ["lamp"]]
    # three connected nodes: two eigenvectors, the other three coordinates 0; the isolated lamp: null
    assert [n["embedding"][2:] for n in doc["nodes"][:3]] == [[0.0, 0.0, 0.0]] * 3
    assert doc["nodes"][3]["embedding"] == [None] * 5
    assert doc["eigenvalues"] == pytest.approx([1.0, 2.0])  # a path of 3: normalised Laplacian 0, 1, 2
    # closed form with every eigenvector used: |e_i - e_j|^2 = 1/d_i + 1/d_j (bed d=0.5, sofa d=0.75)
    bed, sofa = (np.array(doc["nodes"][i]["embedding"][:2]) for i in (0, 2))
    assert np.linalg.norm(bed - sofa) ** 2 == pytest.approx(1 / 0.5 + 1 / 0.75)
    plain = graph.to_json(embedding=False)
    assert list(plain) == ["class", "edge_cut", "nodes", "edges", "communities"]
    assert all("embedding" not in n for n in plain["nodes"])
    assert json.loads(graph.to_json_text(False, meta_graph={"x": 1})) == {**plain, "meta_graph": {"x": 1}}


def test_picture_layout_puts_isolated_subsets_in_a_column_on_the_right(graph, tmp_path):
    xy = _layout(graph)
    placed = graph.embedding[:3, :2]
    assert np.array_equal(xy[:3], placed)  # connected subsets at their first two coordinates
    span = np.ptp(placed[:, 0])
    assert xy[3, 0] == pytest.approx(placed[:, 0].max() + 0.2 * span)
    assert xy[3, 1] == pytest.approx(placed[:, 1].min())  # one isolated subset: at the bottom of the range
    two = MetaGraph("cat", ["a", "b", "c"], np.array([5, 6, 7]), np.zeros((3, 3)), [[0], [1], [2]])
    column = _layout(two)  # nothing placed: a column at x = 0, y from 0 to 1
    assert np.array_equal(column, [[0.0, 0.0], [0.0, 0.5], [0.0, 1.0]])
    path = draw_meta_graph(graph, tmp_path / "deep" / "dog.png")
    with Image.open(path) as png:
        assert png.size == (800, 600)
        pixels = np.asarray(png.convert("RGB")).astype(int)
    assert ((pixels != 255).any(axis=2)).mean() > 0.02
    colours = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # communities 0 and 1: C0, C1


def test_nodes_are_in_subset_name_order_and_parameters_are_used():
    """Nodes sort by `cls(context)`, as the official code sorts subset names: "tv stand" comes
    before "tv" there (" " < ")"), after it in a plain sort of the contexts."""
    from stages.metashift.metagraph import build_meta_graph

    subsets = {"tv": np.arange(0, 40), "tv stand": np.arange(10, 50), "rug": np.arange(30, 45)}
    graph = build_meta_graph("dog", subsets)
    assert graph.contexts == ["rug", "tv stand", "tv"]
    assert graph.weights[1, 2] == 30 / 40 and graph.weights[0, 1] == 15 / 15 and graph.weights[0, 2] == 10 / 15
    high = build_meta_graph("dog", subsets, edge_cut=0.7)  # the cut is the one given
    assert high.weights[0, 2] == 0.0 and high.weights[1, 2] == 30 / 40
    assert build_meta_graph("dog", subsets, dim=2).embedding.shape == (3, 2)


def test_two_connected_subsets_are_embedded_one_is_not():
    from stages.metashift.metagraph import spectral_embedding

    weights = np.zeros((3, 3))
    weights[0, 1] = weights[1, 0] = 0.5
    embedding, values = spectral_embedding(weights)
    assert values == pytest.approx([2.0])  # two nodes: normalised Laplacian 0 and 2
    assert np.linalg.norm(embedding[0] - embedding[1]) ** 2 == pytest.approx(1 / 0.5 + 1 / 0.5)
    assert np.array_equal(embedding[:2, 1:], np.zeros((2, 4))) and np.isnan(embedding[2]).all()
    lone, none = spectral_embedding(np.zeros((2, 2)))
    assert none.shape == (0,) and np.isnan(lone).all()
