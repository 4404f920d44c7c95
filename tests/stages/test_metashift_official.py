"""Conformance of the official MetaShift protocol with the official code.

`Official` below re-implements, with networkx (and pandas, as the official
code does), what `dataset/generate_full_MetaShift.py` and
`dataset/domain_generalization_cat_dog.py` compute: subset graphs from
`from_pandas_adjacency` over `cls\\n(context)` labels with overlap
coefficients cut at 0.2, `greedy_modularity_communities(G)` sorted by size,
community sets with the cat-and-dog images removed, `spectral_layout(G, dim=5)`
and d = ½ (‖A − T‖ + ‖B − T‖). shiftforge must agree on planted scene graphs
whose dog communities are the official script's community lists.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stages.metashift.communities import detect_communities
from stages.metashift.distances import community_graph
from stages.metashift.official import greedy_modularity_communities, pairwise_distances, spectral_layout
from stages.metashift.scene_graphs import SceneObject, SceneRecord
from stages.metashift.splits import DomainSplit, domain_split
from stages.metashift.subsets import ContextIndex, SubsetCatalog

nx = pytest.importorskip("networkx")
pd = pytest.importorskip("pandas")

# The dog communities of the official cat/dog experiment, in the order its distance
# graph uses: sorted(train) + sorted(test) + sorted(additional test).
DOG_COMMUNITIES = {
    "bag": ["bag", "backpack", "purse"],
    "bed": ["blanket", "bed", "sheet", "remote control", "pillow", "lamp", "couch", "books", "curtain"],
    "bench": ["bench", "trash can"],
    "bike": ["basket", "woman", "bike", "bicycle"],
    "boat": ["frisbee", "rope", "flag", "trees", "boat"],
    "box": ["box", "container", "food", "table", "plate", "cup"],
    "cabinet": ["floor", "clothes", "towel", "door", "rug", "cabinet"],
    "surfboard": ["water", "surfboard", "sand"],
    "shelf": ["desk", "screen", "laptop", "shelf", "picture", "chair"],
    "cap": ["cap", "scarf", "jacket", "toy", "collar", "tie"],
    "grass": ["house", "grass", "horse", "cow", "sheep", "animal"],
    "sofa": ["sofa", "television", "carpet", "phone", "book"],
    "vehicle": ["car", "motorcycle", "truck", "bike", "basket", "bicycle", "skateboard"],
}
CAT_COMMUNITIES = {
    "sofa": ["cup", "sofa", "chair"],
    "bed": ["bed", "comforter", "sheet", "blanket", "remote control", "pillow", "couch"],
    "shelf": ["container", "shelf", "vase", "bowl"],
}
# Images holding one member of each of two dog communities (planted bridges).
BRIDGES = {
    ("shelf", "cabinet"): 20,
    ("shelf", "bed"): 18,
    ("cabinet", "bed"): 12,
    ("bed", "sofa"): 15,
    ("cabinet", "box"): 22,
    ("box", "bag"): 20,
    ("bag", "cabinet"): 15,
    ("box", "bench"): 22,
    ("bench", "bike"): 20,
    ("vehicle", "boat"): 22,
    ("boat", "surfboard"): 20,
    ("grass", "boat"): 15,
    ("cap", "sofa"): 15,
}
EXPERIMENTS = [("cabinet", "bed"), ("bag", "box"), ("bench", "bike"), ("boat", "surfboard")]


def planted_records() -> list[SceneRecord]:
    """25 images per community holding all its members, the bridges, and 12 cat-and-dog images."""
    blocks = [(25, ["dog", *m]) for m in DOG_COMMUNITIES.values()]
    blocks += [(25, ["cat", *m]) for m in CAT_COMMUNITIES.values()]
    bridge = lambda c: "woman" if c == "bike" else DOG_COMMUNITIES[c][-1]  # noqa: E731
    blocks += [(k, ["dog", bridge(a), bridge(b)]) for (a, b), k in BRIDGES.items()]
    blocks += [(12, ["dog", "cat", "shelf", "desk", "bed"])]
    records = []
    for count, names in blocks:
        for _ in range(count):
            objects = tuple(SceneObject(n) for n in names)
            records.append(SceneRecord(f"{2_000_000 + len(records)}", objects))
    return records


@pytest.fixture(scope="module")
def catalog() -> SubsetCatalog:
    return SubsetCatalog(ContextIndex.from_records(planted_records()))


class Official:
    """The official computations over `node_name_to_img_id` (subset name -> set of image ids)."""

    def __init__(self, catalog: SubsetCatalog, classes: list[str]):
        ids = catalog.index.image_ids
        self.sets = {
            f"{cls}({ctx})": {ids[i] for i in images}
            for cls in classes
            for ctx, images in catalog.candidate_subsets(cls).items()
        }
        # trainsg_dupes: the official cat(dog) key comes from the unthresholded candidate list
        self.dupes = {ids[i] for i in catalog.index.context_images("cat", "dog")}

    @staticmethod
    def build_subset_graph(names: list[str], sets: dict[str, set], dupes: set):
        n = len(names)
        adjacency = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                a, b = sets[names[i]] - dupes, sets[names[j]] - dupes
                adjacency[i, j] = adjacency[j, i] = len(a & b) / min(len(a), len(b))
        adjacency[adjacency < 0.2] = 0
        labels = [x.replace("(", "\n(") for x in names]
        return nx.from_pandas_adjacency(pd.DataFrame(adjacency, index=labels, columns=labels))

    def communities(self, cls: str) -> list[set[str]]:
        names = sorted(k for k in self.sets if k.startswith(f"{cls}(") and k not in ("cat(dog)", "dog(cat)"))
        graph = self.build_subset_graph(names, self.sets, self.dupes)
        found = sorted(nx.community.greedy_modularity_communities(graph), key=len, reverse=True)
        return [{x.replace("\n", "") for x in c} for c in found]

    def community_positions(self, cls: str, scheme: dict[str, list[str]]) -> dict[str, np.ndarray]:
        merged = {
            f"{cls}({name})": set().union(*(self.sets[f"{cls}({m})"] - self.dupes for m in members))
            for name, members in scheme.items()
        }
        graph = self.build_subset_graph(list(merged), merged, set())
        pos = nx.spectral_layout(G=graph, dim=5)
        return {k.replace("\n", ""): v for k, v in pos.items()}

    def d(self, pos: dict[str, np.ndarray], cls: str, a: str, b: str, test: str) -> float:
        t = pos[f"{cls}({test})"]
        return 0.5 * (np.linalg.norm(pos[f"{cls}({a})"] - t) + np.linalg.norm(pos[f"{cls}({b})"] - t))


def _experiment(a: str, b: str, **extra) -> DomainSplit:
    return DomainSplit(
        mode="domain",
        classes=["cat", "dog"],
        train={"cat": ["sofa", "bed"], "dog": [a, b]},
        test={"cat": ["shelf"], "dog": ["shelf"]},
        **extra,
    )


def test_published_experiments_come_out_in_published_order(catalog):
    """The four dog experiments on the official community lists: d rises 0.44 < 0.71 < 1.12 < 1.43
    in the paper; here the same computation must give the same order and the official values."""
    official = Official(catalog, ["cat", "dog"])
    pos = official.community_positions("dog", DOG_COMMUNITIES)
    communities = {"dog": DOG_COMMUNITIES, "cat": CAT_COMMUNITIES}
    ours = []
    for a, b in EXPERIMENTS:
        report = domain_split(catalog, _experiment(a, b, communities=communities)).report["classes"]["dog"]
        ours.append(report["d"]["dog(shelf)"])
        assert ours[-1] == pytest.approx(official.d(pos, "dog", a, b, "shelf"), abs=1e-6)
        assert report["communities"] == {"train": [f"dog({a})", f"dog({b})"], "test": ["dog(shelf)"]}
        assert len(report["meta_graph"]["nodes"]) == 13
    assert ours == sorted(ours) and len(set(ours)) == 4
    assert ours == pytest.approx([0.605517, 1.252736, 1.316838, 1.405577], abs=1e-6)
    assert _experiment("cabinet", "bed").protocol == "official"  # the default
    # the per-subset analysis on the same data breaks the order (and is 5-10x smaller)
    per_subset = [
        domain_split(catalog, _experiment(a, b, communities=communities, protocol="subsets")).report["classes"]["dog"][
            "d"
        ]["dog(shelf)"]
        for a, b in EXPERIMENTS
    ]
    assert per_subset != sorted(per_subset) and max(per_subset) < 0.2


def test_training_images_are_the_union_of_the_listed_communities(catalog):
    communities = {"dog": DOG_COMMUNITIES, "cat": CAT_COMMUNITIES}
    result = domain_split(catalog, _experiment("cabinet", "bed", communities=communities))
    official = Official(catalog, ["cat", "dog"])
    test = set().union(*(official.sets[f"dog({m})"] for m in DOG_COMMUNITIES["shelf"])) - official.dupes
    train = set().union(*(official.sets[f"dog({m})"] for c in ("cabinet", "bed") for m in DOG_COMMUNITIES[c]))
    train -= test | official.dupes
    got = lambda split: {a.image_id for a in result.assignments if a.cls == "dog" and a.split == split}  # noqa: E731
    assert got("test") == test and got("train") == train
    assert len(official.dupes) == 12 and not official.dupes & (got("test") | got("train"))


def test_detected_communities_equal_the_official_call(catalog):
    official = Official(catalog, ["cat", "dog"])
    theirs = official.communities("dog")
    graph = community_graph(catalog, "dog", ["cat", "dog"], None, _dupes(catalog))
    ours = [{f"dog({c})" for c in members} for members in graph.members]
    assert sorted(map(sorted, ours)) == sorted(map(sorted, theirs))
    assert len(theirs) == 9  # greedy merging joins some planted communities along the bridges
    assert {f"dog({m})" for m in DOG_COMMUNITIES["shelf"]} in theirs
    # the merged meta-graph of the detected communities embeds like spectral_layout
    scheme = {name: members for name, members in zip(graph.names, graph.members)}
    pos = official.community_positions("dog", scheme)
    reference = pairwise_distances(np.array([pos[f"dog({n})"] for n in graph.names]))
    np.testing.assert_allclose(graph.distances(), reference, atol=1e-9)


def _dupes(catalog):
    from stages.metashift.splits import in_several_classes

    return in_several_classes(catalog, ["cat", "dog"])


def test_detected_community_names_are_their_largest_member():
    subsets = {"a": np.arange(30), "b": np.arange(5, 40), "c": np.arange(100, 130), "d": np.arange(100, 160)}
    assert detect_communities("x", subsets) == {"b": ["a", "b"], "d": ["c", "d"]}


def _random_graph(rng: np.random.Generator, n: int) -> np.ndarray:
    w = np.triu(rng.random((n, n)) * (rng.random((n, n)) < rng.random()), 1)
    w = np.round(w, 1) if rng.random() < 0.5 else w  # rounded weights: many exact ties
    w[w < 0.2] = 0
    return w + w.T


def _nx_graph(w: np.ndarray):
    labels = [f"dog\n(c{i:04d})" for i in range(len(w))]
    return labels, nx.from_pandas_adjacency(pd.DataFrame(w, index=labels, columns=labels))


def test_greedy_modularity_equals_networkx_on_random_graphs():
    rng = np.random.default_rng(12)
    for _ in range(200):
        w = _random_graph(rng, int(rng.integers(1, 28)))
        labels, graph = _nx_graph(w)
        found = sorted(nx.community.greedy_modularity_communities(graph), key=len, reverse=True)
        assert greedy_modularity_communities(w) == [sorted(labels.index(x) for x in c) for c in found]


def test_greedy_modularity_equals_networkx_on_large_planted_graphs():
    """70-220 nodes in 12 planted blocks, several components: long merge sequences (the
    implementation merges each component apart and compacts its matrices once half the
    communities are merged away)."""
    rng = np.random.default_rng(7)
    for _ in range(6):
        n = int(rng.integers(70, 220))
        blocks = rng.integers(0, 12, n)
        p = np.where(blocks[:, None] == blocks[None, :], 0.5, 0.03)
        p[(blocks[:, None] == 0) != (blocks[None, :] == 0)] = 0  # block 0: a component of its own
        p[:3, :] = p[:, :3] = 0  # and three isolated nodes
        w = np.triu((rng.random((n, n)) < p) * np.round(rng.random((n, n)), 1), 1)
        w[w < 0.2] = 0
        w = w + w.T
        labels, graph = _nx_graph(w)
        found = sorted(nx.community.greedy_modularity_communities(graph), key=len, reverse=True)
        assert greedy_modularity_communities(w) == [sorted(labels.index(x) for x in c) for c in found]


def test_greedy_modularity_tie_in_a_row_keeps_the_first_column():
    """After a merge, a row whose new gain at v only equals its best keeps the earlier column (networkx's
    heap order): on this 9-node graph moving to v would merge {1, 2, 7, 8} instead of {0, 1, 4, 6}."""
    w = np.zeros((9, 9))
    for a, b in [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6), (1, 8), (2, 4), (2, 5), (2, 7), (2, 8), (3, 5),
                 (3, 6), (4, 5), (4, 6), (4, 8), (5, 7), (7, 8)]:
        w[a, b] = w[b, a] = 1.0
    labels, graph = _nx_graph(w)
    found = sorted(nx.community.greedy_modularity_communities(graph), key=len, reverse=True)
    assert greedy_modularity_communities(w) == [sorted(labels.index(x) for x in c) for c in found]
    assert greedy_modularity_communities(w) == [[0, 1, 4, 6], [2, 7, 8], [3, 5]]


def test_greedy_modularity_on_a_large_graph_keeps_pairs_and_singletons():
    """Over 64 nodes each component is merged apart: a component of two nodes is one community."""
    n = 70
    w = np.zeros((n, n))
    for start in range(0, 60, 6):                     # ten 6-cliques
        for a, b in itertools.combinations(range(start, start + 6), 2):
            w[a, b] = w[b, a] = 0.5
    w[60, 61] = w[61, 60] = 0.3                       # one pair; 62..69 isolated
    found = greedy_modularity_communities(w)
    assert found == [list(range(s, s + 6)) for s in range(0, 60, 6)] + [[60, 61]] + [[i] for i in range(62, 70)]


def test_greedy_modularity_ignores_weights_and_merges_cliques():
    two_triangles = np.zeros((6, 6))
    for a, b in [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5), (2, 3)]:
        two_triangles[a, b] = two_triangles[b, a] = 0.9 if (a, b) != (2, 3) else 0.21
    assert greedy_modularity_communities(two_triangles) == [[0, 1, 2], [3, 4, 5]]
    assert greedy_modularity_communities(np.where(two_triangles > 0, 1.0, 0.0)) == [[0, 1, 2], [3, 4, 5]]
    assert greedy_modularity_communities(np.zeros((3, 3))) == [[0], [1], [2]]


def test_spectral_layout_equals_networkx_including_isolated_nodes():
    rng = np.random.default_rng(5)
    for _ in range(150):
        n = int(rng.integers(6, 25))
        w = _random_graph(rng, n)
        labels, graph = _nx_graph(w)
        pos = nx.spectral_layout(graph, dim=5)
        theirs = np.array([pos[x] for x in labels])
        ours = spectral_layout(w)
        np.testing.assert_allclose(pairwise_distances(ours), pairwise_distances(theirs), atol=1e-9)
        assert np.isfinite(ours).all() and np.abs(ours).max() == pytest.approx(1.0)
        assert np.abs(ours.mean(axis=0)).max() < 1e-12


def test_spectral_layout_by_hand_and_small_graphs():
    path = np.zeros((3, 3))
    path[0, 1] = path[1, 0] = path[1, 2] = path[2, 1] = 1.0
    # L = [[1,-1,0],[-1,2,-1],[0,-1,1]]: eigenvalues 0, 1, 3; vectors (1,0,-1)/√2 and (1,-2,1)/√6,
    # centred already, scaled so that the largest coordinate |−2/√6| is 1
    ours = spectral_layout(path)
    expected = np.array([[1 / np.sqrt(2), 1 / np.sqrt(6)], [0, -2 / np.sqrt(6)], [-1 / np.sqrt(2), 1 / np.sqrt(6)]])
    expected /= 2 / np.sqrt(6)
    np.testing.assert_allclose(pairwise_distances(ours), pairwise_distances(expected), atol=1e-12)
    assert (ours[:, 2:] == 0).all()  # n - 1 = 2 eigenvectors only
    # networkx raises for 3..5 nodes with dim=5; the padded layout equals its dim = n - 1 layout
    for n in (3, 4, 5):
        w = _random_graph(np.random.default_rng(n), n) + np.diag(np.zeros(n))
        labels, graph = _nx_graph(w)
        with pytest.raises(ValueError):
            nx.spectral_layout(graph, dim=5)
        pos = nx.spectral_layout(graph, dim=n - 1)
        np.testing.assert_allclose(
            pairwise_distances(spectral_layout(w)),
            pairwise_distances(np.array([pos[x] for x in labels])),
            atol=1e-9,
        )
    assert (spectral_layout(np.array([[0.0, 0.5], [0.5, 0.0]])) == 0).all()  # networkx: both at the centre


def test_isolated_community_is_embedded(catalog):
    scheme = {
        "dog": {
            "shelf": DOG_COMMUNITIES["shelf"],
            "bed": DOG_COMMUNITIES["bed"],
            "cabinet": DOG_COMMUNITIES["cabinet"],
            "grass": DOG_COMMUNITIES["grass"],
        }
    }
    graph = community_graph(catalog, "dog", ["cat", "dog"], scheme["dog"], _dupes(catalog))
    assert graph.weights[graph.node("grass")].sum() == 0  # no edge
    assert np.isfinite(graph.distances()).all()
    assert graph.distances()[graph.node("grass"), graph.node("shelf")] > 0


def test_pairs_of_contexts_in_one_community_count_once(catalog):
    communities = {"dog": DOG_COMMUNITIES}
    graph = community_graph(catalog, "dog", ["cat", "dog"], DOG_COMMUNITIES, _dupes(catalog))
    assert graph.mix_distance(["floor", "rug", "bed"], "shelf") == pytest.approx(
        graph.mix_distance(["cabinet", "bed"], "shelf"), abs=1e-12
    )
    with pytest.raises(Exception, match="several communities"):
        graph.node("basket")  # in dog(bike) and dog(vehicle)
    assert communities  # the lists are used as given
    for a, b in itertools.combinations(["cabinet", "bed", "box"], 2):
        assert graph.mix_distance([a, b], "shelf") > 0
