"""The vectorised MetaShift paths against straightforward references, exactly.

`metashift subsets` must write the same bytes as the plain definitions give:
the interned index against one built from records, subsets against set
intersections, overlap coefficients against Python float division, the
batched and hub-aware greedy merging against networkx, and the JSON text
against `json.dumps`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.metashift.context_index import ContextIndex
from stages.metashift.metagraph import EDGE_CUT, MetaGraph, build_meta_graph, overlap_coefficients
from stages.metashift.official import greedy_modularity_communities, greedy_modularity_communities_of
from stages.metashift.scene_graphs import MetaShiftError, read_object_lists, read_records
from stages.metashift.subsets import SubsetCatalog, Thresholds


def _planted_graphs(seed: int = 0, images: int = 400) -> dict:
    """Scene graphs whose names are skewed (a few in most images), with attributes and
    repeated objects in one image."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 41) ** 1.2
    graphs = {}
    for k in range(images):
        names = rng.choice(40, size=int(rng.integers(2, 12)), p=weights / weights.sum())
        objects = {
            f"{k}-{j}": {"name": f"n{n}", "attributes": [f"a{a}" for a in rng.integers(0, 5, rng.integers(0, 3))]}
            for j, n in enumerate(names)
        }
        graphs[f"img{k}"] = {"width": 4, "height": 4, "objects": objects}
    return graphs


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted") / "sg.json"
    path.write_text(json.dumps(_planted_graphs()))
    return path


def test_object_lists_are_the_records(planted):
    lists = list(read_object_lists(planted))
    records = list(read_records(planted))
    assert [i for i, _, _ in lists] == [r.image_id for r in records]
    assert [names for _, names, _ in lists] == [[o.name for o in r.objects] for r in records]
    assert [[tuple(a or ()) for a in attrs] for _, _, attrs in lists] == [
        [o.attributes for o in r.objects] for r in records
    ]


@pytest.mark.parametrize(
    "graph",
    [
        {"objects": [1]},
        {"objects": {"a": "dog"}},
        {"objects": {"a": {"nam": "dog"}}},
        {"objects": {"a": {"name": 5}}},
        {"objects": {"a": {"name": "dog", "attributes": "white"}}},
        {"objects": {"a": {"name": "dog", "attributes": [["white"]]}}},
        {"objects": {"a": {"name": "dog", "attributes": [1]}}},
        {"objects": {"a": {"name": "dog", "attributes": False}}},
        {"objects": {"a": {"name": "dog"}, "b": {"name": "cat", "attributes": {"x": 1}}}},
    ],
)
def test_object_lists_refuse_what_records_refuse(tmp_path, graph):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"1": {"objects": {"ok": {"name": "dog"}}}, "2": graph}))
    with pytest.raises(MetaShiftError) as expected:
        list(read_records(path))
    with pytest.raises(MetaShiftError) as found:
        list(read_object_lists(path))
    assert str(found.value) == str(expected.value)


@pytest.mark.parametrize("with_attributes", [True, False])
def test_index_from_path_equals_index_from_records(planted, tmp_path, with_attributes):
    reference = ContextIndex.from_records(read_records(planted), with_attributes)
    rows = [
        {
            "image_id": i,
            "objects": ";".join(names),
            "attributes": ";".join(f"{n}:{a}" for n, values in zip(names, attrs) for a in values or []),
        }
        for i, names, attrs in read_object_lists(planted)
    ]
    table = tmp_path / "meta.csv"
    pd = pytest.importorskip("pandas")
    pd.DataFrame(rows).to_csv(table, index=False)
    for path in (planted, table):
        index = ContextIndex.from_path(path, with_attributes)
        assert index.image_ids == reference.image_ids
        assert list(index.objects) == list(reference.objects)  # same codes, first-seen order
        assert {k: v.tolist() for k, v in index.objects.items()} == {
            k: v.tolist() for k, v in reference.objects.items()
        }
        assert {n: {a: p.tolist() for a, p in d.items()} for n, d in index.attributes.items()} == {
            n: {a: p.tolist() for a, p in d.items()} for n, d in reference.attributes.items()
        }
    duplicate = tmp_path / "twice.json"
    duplicate.write_text('{"1": {"objects": {}}, "1": {"objects": {}}}')
    with pytest.raises(MetaShiftError, match="image id '1' appears twice"):
        ContextIndex.from_path(duplicate)


def test_subsets_are_the_intersections(planted):
    index = ContextIndex.from_path(planted)
    ids = index.image_ids
    holding = {name: {ids[i] for i in index.images_with(name)} for name in index.names}
    for cls in index.names:
        contexts = [c for c in index.names if c != cls]
        found = index.object_contexts(cls, contexts)
        for context in contexts:
            images = found[context]
            assert images.dtype.kind == "i" and list(images) == sorted(images)
            assert {ids[i] for i in images} == holding[cls] & holding[context]


@pytest.mark.parametrize("n", [1, 7, 64, 65, 150])
def test_overlap_coefficients_equal_set_arithmetic(n):
    """Both ways of counting (lists of up to 128 sets together, larger ones alone with their hubs)."""
    rng = np.random.default_rng(n)
    sets = [np.unique(rng.integers(0, 300, rng.integers(1, 120))) for _ in range(n)]
    sets[0] = sets[-1][::2].copy()  # nested sets: coefficient 1
    found = overlap_coefficients(sets)
    plain = [set(s.tolist()) for s in sets]
    expected = np.array([[len(a & b) / min(len(a), len(b)) for b in plain] for a in plain])
    assert found.dtype == np.float64 and np.array_equal(found, expected)


def test_meta_graph_weights_equal_set_arithmetic(planted):
    catalog = SubsetCatalog(ContextIndex.from_path(planted), Thresholds(min_subset_size=5, min_subsets_per_class=3))
    for cls in catalog.classes():
        graph = catalog.meta_graph(cls)
        subsets = catalog.subsets(cls)
        plain = [set(subsets[c].tolist()) for c in graph.contexts]
        expected = np.array([[len(a & b) / min(len(a), len(b)) for b in plain] for a in plain])
        expected[expected < EDGE_CUT] = 0.0
        np.fill_diagonal(expected, 0.0)
        assert np.array_equal(graph.weights, expected)


def _hub_graph(rng: np.random.Generator, n: int, hubs: int) -> np.ndarray:
    """Planted blocks plus `hubs` nodes adjacent to most others, at random positions:
    the merges run into, out of and between hub communities."""
    blocks = rng.integers(0, max(2, n // 12), n)
    w = (rng.random((n, n)) < np.where(blocks[:, None] == blocks[None, :], 0.5, 0.02)).astype(float)
    centre = rng.choice(n, min(hubs, n), replace=False)
    w[centre] = rng.random((len(centre), n)) < 0.85
    w = np.triu(np.maximum(w, w.T) * np.round(rng.random((n, n)) + 0.2, 1), 1)
    return w + w.T


def _networkx(w: np.ndarray) -> list[list[int]]:
    nx = pytest.importorskip("networkx")
    found = nx.community.greedy_modularity_communities(nx.from_numpy_array(w))  # unweighted, nodes 0..n-1
    return [sorted(int(x) for x in c) for c in sorted(found, key=len, reverse=True)]


def _tied_graphs() -> list[np.ndarray]:
    """Rings, grids, chained cliques and stars: equal degrees everywhere, so equal gains
    and the tie-breaks decide each merge."""
    graphs = []
    for n in (6, 9, 16, 31):
        ring = np.zeros((n, n))
        ring[np.arange(n), (np.arange(n) + 1) % n] = 1
        graphs.append(ring + ring.T)
    for side in (3, 4, 6):
        cells = np.arange(side * side).reshape(side, side)
        grid = np.zeros((side * side, side * side))
        grid[cells[:, :-1].ravel(), cells[:, 1:].ravel()] = 1
        grid[cells[:-1].ravel(), cells[1:].ravel()] = 1
        graphs.append(grid + grid.T)
    for size, count in ((3, 4), (4, 5), (5, 3)):
        chain = np.kron(np.eye(count), np.ones((size, size)))
        for k in range(count - 1):
            chain[k * size + size - 1, (k + 1) * size] = chain[(k + 1) * size, k * size + size - 1] = 1
        graphs.append(chain)
    star = np.zeros((12, 12))
    star[0, 1:] = star[1:, 0] = 1
    graphs.append(star)
    rng = np.random.default_rng(0)
    graphs += [_regular(rng, int(rng.choice([20, 32])), 2) for _ in range(45)]
    rng = np.random.default_rng(26)  # among these, hub rows meet exact ties
    for _ in range(10):  # more than 64 nodes: hub columns; a few nodes adjacent to all
        w = _regular(rng, int(rng.integers(65, 120)), int(rng.integers(1, 4)))
        centre = rng.choice(len(w), int(rng.integers(1, 5)), replace=False)
        w[centre], w[:, centre] = 1, 1
        np.fill_diagonal(w, 0)
        graphs.append(w)
    return graphs


def _regular(rng: np.random.Generator, n: int, cycles: int) -> np.ndarray:
    """A 2·cycles-regular graph: the union of random Hamiltonian cycles, drawn until simple."""
    while True:
        w = np.zeros((n, n))
        for _ in range(cycles):
            order = rng.permutation(n)
            w[order, np.roll(order, 1)] += 1
        w += w.T
        if w.max() == 1 and not w.diagonal().any():
            return w


def test_greedy_merging_side_by_side_on_ties_equals_networkx():
    graphs = _tied_graphs()
    expected = [_networkx(w) for w in graphs]
    assert greedy_modularity_communities_of(graphs) == expected
    assert [greedy_modularity_communities(w) for w in graphs] == expected


def test_greedy_merging_side_by_side_and_with_hubs_equals_networkx():
    """Graphs of 3..256 nodes are merged side by side; 70 and 300 nodes one by one with hub columns."""
    rng = np.random.default_rng(11)
    graphs = [_hub_graph(rng, int(n), int(rng.integers(1, 6))) for n in rng.integers(3, 120, 24)]
    graphs += [_hub_graph(rng, 200, 8), _hub_graph(rng, 70, 20), _hub_graph(rng, 300, 10), np.zeros((4, 4))]
    together = greedy_modularity_communities_of(graphs)
    assert together == [greedy_modularity_communities(w) for w in graphs]
    assert together == [_networkx(w) for w in graphs]


def test_json_text_equals_json_dumps():
    subsets = {
        "ça va": np.arange(0, 40),
        'quote"d': np.arange(10, 50),
        "b": np.arange(30, 90),
        "lonely": np.arange(500, 530),
        "c\\d": np.arange(35, 60),
    }
    graph = build_meta_graph("chat", subsets)
    assert len(graph.to_json()["edges"]) >= 3
    for embedding in (True, False):
        assert graph.to_json_text(embedding) == json.dumps(graph.to_json(embedding))
        extra = {"meta_graph": {"nodes": [1.5, None]}}
        assert graph.to_json_text(embedding, **extra) == json.dumps({**graph.to_json(embedding), **extra})
    alone = MetaGraph("x", ["a", "b"], np.array([3, 4]), np.zeros((2, 2)), [[0], [1]])
    assert alone.to_json_text(False) == json.dumps(alone.to_json(False))


def test_prepare_keeps_the_order_and_leaves_failures_to_their_turn(planted):
    index = ContextIndex.from_path(planted)
    thresholds = Thresholds(min_subset_size=5, min_subsets_per_class=3)
    catalog, alone = SubsetCatalog(index, thresholds), SubsetCatalog(index, thresholds)
    kept = catalog.classes()
    asked = kept[:3] + ["nope"] + kept[3:]
    assert list(catalog.prepare(asked, max_cells=50)) == asked
    with pytest.raises(MetaShiftError, match="unknown class 'nope'"):
        catalog.subsets("nope")
    for cls in kept:
        graph, reference = catalog.meta_graph(cls), alone.meta_graph(cls)
        assert graph.contexts == reference.contexts and graph.communities == reference.communities
        assert np.array_equal(graph.weights, reference.weights)


@pytest.mark.parametrize("protocol", ["official", "subsets"])
def test_export_bytes_do_not_depend_on_workers_or_grouping(planted, tmp_path, monkeypatch, protocol):
    """Classes go to forked workers in groups; the files must be those of one process."""
    from pipeline.cli import metashift as cli

    index = ContextIndex.from_path(planted)
    thresholds = Thresholds(min_subset_size=5, min_subsets_per_class=3)
    outs, reported = [], []
    for workers, group in ((1, 64), (3, 1), (2, 4)):
        monkeypatch.setattr(cli, "_GROUP_CLASSES", group)
        out = tmp_path / f"{workers}-{group}"
        steps: list[tuple[int, int]] = []
        catalog = SubsetCatalog(index, thresholds)
        cli.export_catalog(catalog, out, protocol=protocol, workers=workers, progress=lambda *a, to=steps: to.append(a))
        outs.append(out)
        reported.append(steps)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    classes = SubsetCatalog(index, thresholds).classes()
    assert len(classes) >= 5 and len(files) == len(classes) + 2
    assert list(json.loads((outs[0] / "subsets.json").read_text())["classes"]) == classes  # in the order asked
    for other in outs[1:]:
        assert sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file()) == files
        for name in files:
            assert (other / name).read_bytes() == (outs[0] / name).read_bytes(), name
    assert reported == [[(k, len(classes)) for k in range(1, len(classes) + 1)]] * 3


def test_reading_progress_counts_the_bytes(planted):
    from stages.metashift.scene_graphs import iter_json_object

    seen: list[int] = []
    records = sum(1 for _ in iter_json_object(planted, chunk_chars=4096, progress=seen.append))
    assert records == 400 and len(seen) > 10
    assert seen == sorted(seen) and seen[-1] == planted.stat().st_size
    whole: list[int] = []
    ContextIndex.from_path(planted, progress=whole.append)
    assert whole[-1] == planted.stat().st_size
