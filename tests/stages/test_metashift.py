"""MetaShift curation on a synthetic scene-graph fixture whose subsets, overlaps,
communities and distances are worked out by hand below."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.base import Batch
from stages.metashift import MetaShiftParams, MetaShiftStage
from stages.metashift.distances import sweep_mixes
from stages.metashift.metagraph import build_meta_graph, spectral_embedding
from stages.metashift.official import greedy_modularity_communities
from stages.metashift.scene_graphs import (
    MetaShiftError,
    SceneObject,
    SceneRecord,
    iter_json_object,
    read_records,
    read_scene_graphs,
)
from stages.metashift.splits import (
    DomainSplit,
    SubpopulationSplit,
    domain_split,
)
from stages.metashift.subpopulation import subpopulation_split
from stages.metashift.subsets import ContextIndex, SubsetCatalog, Thresholds

REPO = Path(__file__).resolve().parents[2]

# (count, objects, attributes of the cat) — every image of a block holds exactly these objects.
#
# dog: sofa 20+10+5 = 35, bed 20+10 = 30, cabinet 10+20+5 = 35, shelf 20+10+10 = 40,
#      bench 20+10 = 30, bike 20+10 = 30 (six kept), leash 10 (below 25).
#      overlaps: sofa-bed 20/30, bed-cabinet 10/30, cabinet-shelf 20/35, bench-bike 20/30,
#      sofa-cabinet 5/35 = 0.14 (cut), every other pair 0.
# cat: sofa 25+10 = 35, pillow 25+15 = 40, blanket 15+15 = 30, window 20+10 = 30,
#      curtain 20+10 = 30, grass 25, shelf 20+10 = 30 (seven kept; grass and shelf isolated).
#      overlaps: sofa-pillow 25/35, pillow-blanket 15/30, window-curtain 20/30.
# horse: grass 30, fence 30 — two subsets, so the class is dropped.
BLOCKS = [
    (20, ["dog", "sofa", "bed"], []),
    (10, ["dog", "sofa"], []),
    (10, ["dog", "bed", "cabinet"], []),
    (20, ["dog", "cabinet", "shelf"], []),
    (10, ["dog", "shelf"], []),
    (20, ["dog", "bench", "bike"], []),
    (10, ["dog", "bench"], []),
    (10, ["dog", "bike"], []),
    (10, ["dog", "leash"], []),
    (5, ["dog", "sofa", "cabinet"], []),
    (10, ["dog", "cat", "shelf"], []),
    (25, ["cat", "sofa", "pillow"], ["orange"]),
    (10, ["cat", "sofa"], []),
    (15, ["cat", "pillow", "blanket"], []),
    (15, ["cat", "blanket"], ["black"]),
    (20, ["cat", "window", "curtain"], ["orange"]),
    (10, ["cat", "window"], []),
    (10, ["cat", "curtain"], []),
    (25, ["cat", "grass"], []),
    (20, ["cat", "shelf"], []),
    (30, ["horse", "grass"], []),
    (30, ["horse", "fence"], []),
    (5, ["tree"], []),
]
N_IMAGES = sum(count for count, _, _ in BLOCKS)  # 350
DOG = {"bed": 30, "bench": 30, "bike": 30, "cabinet": 35, "shelf": 40, "sofa": 35}
DOG_WEIGHTS = {
    ("bed", "sofa"): Fraction(2, 3),
    ("bed", "cabinet"): Fraction(1, 3),
    ("cabinet", "shelf"): Fraction(4, 7),
    ("bench", "bike"): Fraction(2, 3),
}


# Official d of dog(sofa + bed) to dog(shelf): the merged meta-graph is {sofa, bed} -- {cabinet, shelf}
# (overlap 15/45 = 1/3) plus the isolated {bench, bike}; the eigenvector (1, -1, 0)/sqrt(2) of
# eigenvalue 2/3 holds the largest coordinate, so after rescaling the two communities sit at +1 and -1
# on that axis and share the other.
OFFICIAL_D_SHELF = 2.0


def block_ids() -> list[tuple[str, list[str], list[str]]]:
    """(image id, objects, cat attributes) per image, ids 1000, 1001, ... in block order."""
    rows = []
    for count, objects, attributes in BLOCKS:
        rows += [(str(1000 + len(rows) + i), objects, attributes) for i in range(count)]
    return rows


def ids_of_block(b: int) -> set[str]:
    start = sum(count for count, _, _ in BLOCKS[:b])
    return {str(1000 + start + i) for i in range(BLOCKS[b][0])}


def write_scene_graphs(path: Path) -> dict:
    """GQA layout, including geometry and relations the reader must skip."""
    rng = np.random.default_rng(0)
    graphs = {}
    for image_id, objects, attributes in block_ids():
        objs = {}
        for k, name in enumerate(objects):
            x, y, w, h = (int(v) for v in rng.integers(0, 300, 4))
            objs[f"{image_id}{k}"] = {
                "name": name,
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "attributes": attributes if name == "cat" else ["wooden"],
                "relations": [{"name": "near", "object": f"{image_id}{(k + 1) % len(objects)}"}],
            }
        graphs[image_id] = {"width": 640, "height": 480, "location": "indoors", "objects": objs}
    path.write_text(json.dumps(graphs, indent=1))
    return graphs


@pytest.fixture(scope="module")
def scene_graphs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gqa") / "train_sceneGraphs.json"
    write_scene_graphs(path)
    return path


@pytest.fixture(scope="module")
def catalog(scene_graphs) -> SubsetCatalog:
    return SubsetCatalog(ContextIndex.from_records(read_records(scene_graphs)))


# -- readers ------------------------------------------------------------------------


def test_streaming_reader_equals_json_load_with_tiny_chunks(scene_graphs):
    expected = json.loads(scene_graphs.read_text())
    streamed = list(iter_json_object(scene_graphs, chunk_chars=7))
    assert [k for k, _ in streamed] == list(expected)
    assert dict(streamed) == expected
    records = list(read_scene_graphs(scene_graphs))
    assert len(records) == N_IMAGES
    assert records[0] == SceneRecord(
        "1000",
        (SceneObject("dog", ("wooden",)), SceneObject("sofa", ("wooden",)), SceneObject("bed", ("wooden",))),
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "expected '{'"),
        ('{"1": {"objects": {}} "2": {}}', "expected ',' or '}'"),
        ('{"1": {"objects": {"a": {"name": "dog"}}}', "expected ',' or '}'"),
        ('{"1": {"objects": {"a": {"nam": "dog"}}}}', "expected {'name': str"),
        ('{"1": {"objects": [1, 2}}', "invalid JSON"),
    ],
)
def test_streaming_reader_rejects_bad_json(tmp_path, text, message):
    path = tmp_path / "bad_sceneGraphs.json"
    path.write_text(text)
    with pytest.raises(MetaShiftError, match=message):
        list(read_scene_graphs(path))


def test_table_readers_match_scene_graphs(tmp_path, scene_graphs):
    rows = [
        {"image_id": i, "objects": ";".join(objs), "attributes": ";".join(f"cat:{a}" for a in attrs)}
        for i, objs, attrs in block_ids()
    ]
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    pd.DataFrame([{**r, "objects": r["objects"].split(";")} for r in rows]).to_parquet(
        tmp_path / "meta.parquet"
    )
    for path in (tmp_path / "meta.csv", tmp_path / "meta.parquet"):
        index = ContextIndex.from_records(read_records(path))
        assert index.image_ids == [i for i, _, _ in block_ids()]
        assert SubsetCatalog(index).subsets("dog").keys() == DOG.keys()
    (tmp_path / "bad.csv").write_text("image_id,objects,attributes\n1,dog;bed,cat:black\n")
    with pytest.raises(MetaShiftError, match="names object 'cat', which is not among"):
        list(read_records(tmp_path / "bad.csv"))
    (tmp_path / "cols.csv").write_text("id,objects\n1,dog\n")
    with pytest.raises(MetaShiftError, match="missing image_id"):
        list(read_records(tmp_path / "cols.csv"))
    with pytest.raises(MetaShiftError, match="does not exist"):
        list(read_records(tmp_path / "nope.json"))


# -- subsets and meta-graph -------------------------------------------------------


def test_subsets_and_thresholds(catalog):
    assert catalog.classes() == ["cat", "dog"]
    assert {ctx: len(images) for ctx, images in catalog.subsets("dog").items()} == DOG
    assert set(catalog.subsets("cat")) == {"blanket", "curtain", "grass", "pillow", "shelf", "sofa", "window"}
    ids = catalog.index.image_ids
    assert {ids[i] for i in catalog.subset("dog", "shelf")} == ids_of_block(3) | ids_of_block(
        4
    ) | ids_of_block(10)
    with pytest.raises(MetaShiftError, match=r"dog\(leash\) has 10 images, fewer than"):
        catalog.subset("dog", "leash")
    with pytest.raises(MetaShiftError, match="did you mean 'shelf'"):
        catalog.subset("dog", "shelff")
    with pytest.raises(MetaShiftError, match="unknown class 'dgo'; did you mean 'dog'"):
        catalog.subsets("dgo")
    with pytest.raises(MetaShiftError, match="class 'horse' has 2 subsets"):
        catalog.subsets("horse")
    loose = SubsetCatalog(catalog.index, Thresholds(min_subset_size=10, min_subsets_per_class=2))
    assert "horse" in loose.classes() and len(loose.subsets("dog")) == 8  # + leash, cat


def test_attribute_contexts(catalog):
    both = SubsetCatalog(catalog.index, Thresholds(), kinds=("object", "attribute"))
    ids = catalog.index.image_ids
    assert {ids[i] for i in both.subset("cat", "attr:orange")} == ids_of_block(11) | ids_of_block(15)
    with pytest.raises(MetaShiftError, match=r"cat\(attr:black\) has 15 images"):
        both.subset("cat", "attr:black")


def test_index_without_attributes(catalog, scene_graphs):
    plain = ContextIndex.from_records(read_records(scene_graphs), with_attributes=False)
    assert plain.attributes == {} and plain.image_ids == catalog.index.image_ids
    assert {k: v.tolist() for k, v in plain.objects.items()} == {
        k: v.tolist() for k, v in catalog.index.objects.items()
    }


def test_attribute_vocabulary(catalog):
    """'wooden' (every non-cat object) is not in the official ontology ('wood' is); 'orange' is."""
    official = SubsetCatalog(catalog.index, Thresholds(), kinds=("object", "attribute"))
    assert "attr:wooden" not in official.subsets("dog") and "attr:orange" in official.subsets("cat")
    with pytest.raises(MetaShiftError, match="'wooden' is not in the official attribute ontology"):
        official.subset("dog", "attr:wooden")
    loose = SubsetCatalog(catalog.index, Thresholds(), ("object", "attribute"), attribute_vocabulary="any")
    assert len(loose.subset("dog", "attr:wooden")) == 135  # every dog image
    assert len(loose.subsets("dog")) == len(official.subsets("dog")) + 1


def test_meta_graph_weights_by_hand(catalog):
    graph = catalog.meta_graph("dog")
    assert graph.contexts == sorted(DOG)
    expected = np.zeros((6, 6))
    for (a, b), w in DOG_WEIGHTS.items():
        expected[graph.position(a), graph.position(b)] = expected[graph.position(b), graph.position(a)] = (
            float(w)
        )
    np.testing.assert_allclose(graph.weights, expected, atol=1e-12)
    assert graph.weights[graph.position("sofa"), graph.position("cabinet")] == 0.0  # 5/35 < 0.2


def _modularity(weights: np.ndarray, partition: list[list[int]]) -> float:
    total, degree = weights.sum(), weights.sum(1)
    return sum(weights[np.ix_(p, p)].sum() / total - (degree[p].sum() / total) ** 2 for p in partition)


def _partitions(items: list[int]):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in _partitions(rest):
        for k in range(len(smaller)):
            yield smaller[:k] + [[first] + smaller[k]] + smaller[k + 1 :]
        yield [[first]] + smaller


def test_communities_are_the_best_partition(catalog):
    graph = catalog.meta_graph("dog")
    names = lambda partition: sorted(sorted(graph.contexts[i] for i in p) for p in partition)  # noqa: E731
    assert names(graph.communities) == [["bed", "sofa"], ["bench", "bike"], ["cabinet", "shelf"]]
    best = max(_partitions(list(range(6))), key=lambda p: _modularity(graph.weights, p))  # all 203 partitions
    assert names(best) == names(graph.communities)
    nx = pytest.importorskip("networkx")
    g = nx.from_numpy_array(graph.weights)
    theirs = nx.community.greedy_modularity_communities(g, weight="weight")
    assert names([sorted(c) for c in theirs]) == names(graph.communities)


def test_distances_closed_form_for_six_subsets(catalog):
    """With n = dim + 1 nodes all eigenvectors are used and ||e_i - e_j||^2 = 1/d_i + 1/d_j."""
    graph = catalog.meta_graph("dog")
    degree = {
        "sofa": 2 / 3,
        "bed": 1.0,
        "cabinet": 1 / 3 + 4 / 7,
        "shelf": 4 / 7,
        "bench": 2 / 3,
        "bike": 2 / 3,
    }
    for a, b in itertools.combinations(DOG, 2):
        assert graph.distance(a, b) == pytest.approx(np.sqrt(1 / degree[a] + 1 / degree[b]), abs=1e-9)
    expected = (np.sqrt(1.5 + 1.75) + np.sqrt(1.0 + 1.75)) / 2
    assert graph.mix_distance(["sofa", "bed"], "shelf") == pytest.approx(expected, abs=1e-9)


def test_isolated_subsets_have_no_distance(catalog):
    graph = catalog.meta_graph("cat")
    assert np.isnan(graph.distance("grass", "sofa")) and np.isnan(graph.distance("shelf", "grass"))
    assert graph.distance("sofa", "window") == pytest.approx(np.sqrt(7 / 5 + 3 / 2), abs=1e-9)
    node = {n["context"]: n for n in graph.to_json()["nodes"]}
    assert node["grass"]["embedding"] == [None] * 5 and node["grass"]["size"] == 25


def test_distance_report_rounds_to_six_digits_and_nulls_isolated_subsets(catalog):
    from stages.metashift.distances import distance_report

    report = distance_report(catalog.meta_graph("dog"), ["sofa", "bed"], ["shelf"])
    sofa, bed = np.sqrt(1.5 + 1.75), np.sqrt(1.0 + 1.75)          # closed form, see the test above
    assert report["train"] == ["dog(sofa)", "dog(bed)"] and report["test"] == ["dog(shelf)"]
    assert report["d"] == {"dog(shelf)": round((sofa + bed) / 2, 6)} == {"dog(shelf)": 1.730544}
    assert report["pairs"] == [{"train": "dog(sofa)", "test": "dog(shelf)", "distance": 1.802776},
                               {"train": "dog(bed)", "test": "dog(shelf)", "distance": 1.658312}]
    isolated = distance_report(catalog.meta_graph("cat"), ["grass", "sofa"], ["window"])
    assert isolated["d"] == {"cat(window)": None}
    assert isolated["pairs"] == [{"train": "cat(grass)", "test": "cat(window)", "distance": None},
                                 {"train": "cat(sofa)", "test": "cat(window)", "distance": round(np.sqrt(2.9), 6)}]


def test_community_graph_reuses_the_catalog_graph_as_detection_would(catalog):
    """Nothing to drop: the catalog's subset graph is split; with a (no-op) drop the communities are detected
    anew from the subsets. Both give the same merged-community graph."""
    from stages.metashift.distances import community_graph

    reused = community_graph(catalog, "dog", ["cat", "dog"])
    detected = community_graph(catalog, "dog", ["cat", "dog"], ambiguous=np.array([N_IMAGES + 1]))
    assert reused.cls == detected.cls == "dog"
    assert reused.names == detected.names == ["bench", "shelf", "sofa"]   # largest member; bench-bike tie: first
    assert reused.members == detected.members == [["bench", "bike"], ["cabinet", "shelf"], ["bed", "sofa"]]
    assert reused.sizes.tolist() == detected.sizes.tolist() == [40, 55, 45]
    assert np.array_equal(reused.weights, detected.weights) and np.array_equal(reused.positions, detected.positions)


def test_spectral_embedding_matches_generalised_eigenproblem():
    from scipy.linalg import eigh

    rng = np.random.default_rng(3)
    w = np.triu(rng.random((12, 12)) * (rng.random((12, 12)) < 0.5), 1)
    w = w + w.T
    embedding, values = spectral_embedding(w, 5)
    degree = np.diag(w.sum(1))
    ref_values, ref_vectors = eigh(degree - w, degree)  # D-orthonormal, ascending
    np.testing.assert_allclose(values, ref_values[1:6], atol=1e-9)
    for k in range(5):  # same vectors up to sign
        ref = ref_vectors[:, k + 1] * np.sign(ref_vectors[np.argmax(np.abs(ref_vectors[:, k + 1])), k + 1])
        np.testing.assert_allclose(embedding[:, k], ref, atol=1e-8)
    assert greedy_modularity_communities(np.zeros((3, 3))) == [[0], [1], [2]]


def test_build_meta_graph_from_plain_sets():
    subsets = {"a": np.arange(0, 10), "b": np.arange(5, 25), "c": np.arange(100, 104)}
    graph = build_meta_graph("x", subsets)
    assert graph.weights[0, 1] == pytest.approx(0.5) and graph.weights[0, 2] == 0
    assert graph.communities == [[0, 1], [2]]


# -- splits --------------------------------------------------------------------------


def _ids(catalog, result, split, cls) -> set[str]:
    return {a.image_id for a in result.assignments if a.split == split and a.cls == cls}


def test_domain_split_disjoint_and_by_hand(catalog):
    request = DomainSplit(
        mode="domain",
        protocol="subsets",
        classes=["cat", "dog"],
        train={"cat": ["sofa", "pillow"], "dog": ["sofa", "bed"]},
        test={"cat": ["window"], "dog": ["shelf"]},
    )
    result = domain_split(catalog, request)
    dog_test = _ids(catalog, result, "test", "dog")
    assert dog_test == ids_of_block(3) | ids_of_block(4)  # block 10 holds a cat too: dropped
    assert _ids(catalog, result, "train", "dog") == set().union(*(ids_of_block(b) for b in (0, 1, 2, 9)))
    assert (
        len(_ids(catalog, result, "train", "cat")) == 50 and len(_ids(catalog, result, "test", "cat")) == 30
    )
    keys = [a.image_id for a in result.assignments]
    assert len(keys) == len(set(keys)) == 155
    first = next(a for a in result.assignments if a.image_id == "1000")
    assert (first.split, first.label, first.subsets) == ("train", 1, ("dog(sofa)", "dog(bed)"))
    dog = result.report["classes"]["dog"]
    assert dog["counts"] == {"train": 45, "test": 30}
    assert dog["d"]["dog(shelf)"] == pytest.approx((np.sqrt(3.25) + np.sqrt(2.75)) / 2, abs=1e-6)
    assert [p["train"] for p in dog["pairs"]] == ["dog(sofa)", "dog(bed)"]
    assert result.report["dropped"]["in_several_classes"] == 10


def test_domain_split_takes_test_images_out_of_training(catalog):
    request = DomainSplit(
        mode="domain",
        classes=["cat", "dog"],
        train={"cat": ["sofa"], "dog": ["cabinet"]},
        test={"cat": ["window"], "dog": ["shelf"]},
    )
    result = domain_split(catalog, request)
    assert _ids(catalog, result, "train", "dog") == ids_of_block(2) | ids_of_block(9)  # 35 - 20 in shelf
    assert result.report["dropped"]["train_images_in_test"] == 20


def test_bad_requests_fail_with_clear_errors(catalog):
    with pytest.raises(ValueError, match=r"contexts \['shelf'\] are in both train and test"):
        DomainSplit(
            mode="domain",
            classes=["cat", "dog"],
            train={"cat": ["sofa"], "dog": ["shelf", "bed"]},
            test={"cat": ["window"], "dog": ["shelf"]},
        )
    with pytest.raises(ValueError, match="exactly the classes"):
        DomainSplit(mode="domain", classes=["cat", "dog"], train={"cat": ["sofa"]}, test={"cat": ["window"]})
    bad = DomainSplit(
        mode="domain",
        classes=["cat", "dog"],
        train={"cat": ["sofa"], "dog": ["bedd"]},
        test={"cat": ["window"], "dog": ["shelf"]},
    )
    with pytest.raises(MetaShiftError, match="unknown context 'bedd' for class 'dog'; did you mean 'bed'"):
        domain_split(catalog, bad)


def _subpopulation(seed: int) -> SubpopulationSplit:
    return SubpopulationSplit(
        mode="subpopulation",
        protocol="subsets",
        classes=["cat", "dog"],
        majority={"cat": ["sofa", "pillow"], "dog": ["bench", "bike"]},
        minority={"cat": ["window", "curtain"], "dog": ["sofa", "bed"]},
        minority_count=5,
        test_per_group=10,
        seed=seed,
    )


def test_subpopulation_split_counts_and_seed(catalog):
    result = subpopulation_split(catalog, _subpopulation(0))
    groups = {}
    for a in result.assignments:
        groups.setdefault((a.cls, a.split, a.group), set()).add(a.image_id)
    sizes = {k: len(v) for k, v in groups.items()}
    assert sizes == {
        ("cat", "train", "majority"): 40,
        ("cat", "train", "minority"): 5,
        ("cat", "test", "majority"): 10,
        ("cat", "test", "minority"): 10,
        ("dog", "train", "majority"): 30,
        ("dog", "train", "minority"): 5,
        ("dog", "test", "majority"): 10,
        ("dog", "test", "minority"): 10,
    }
    minority_pool = set().union(*(ids_of_block(b) for b in (0, 1, 2, 9)))
    assert groups[("dog", "train", "minority")] <= minority_pool
    assert not groups[("dog", "train", "minority")] & groups[("dog", "test", "minority")]
    again = subpopulation_split(catalog, _subpopulation(0))
    assert again.assignments == result.assignments
    other = subpopulation_split(catalog, _subpopulation(1))
    assert other.assignments != result.assignments
    too_many = _subpopulation(0).model_copy(update={"minority_count": 40})
    with pytest.raises(MetaShiftError, match="minority train .* asks for 40 images but only 30"):
        subpopulation_split(catalog, too_many)


def test_sweep_rises_and_skips_test_and_isolated(catalog):
    mixes = sweep_mixes(catalog.meta_graph("dog"), "shelf", mix_size=2, count=4)
    assert len(mixes) == 4
    d = [m["d"] for m in mixes]
    assert d == sorted(d) and d[0] < d[-1]
    assert all("shelf" not in m["train"] for m in mixes)
    graph = catalog.meta_graph("dog")
    for m in mixes:
        assert m["d"] == pytest.approx(graph.mix_distance(m["train"], "shelf"))
    assert all("grass" not in m["train"] for m in sweep_mixes(catalog.meta_graph("cat"), "sofa", 2, 10))


# -- stage ----------------------------------------------------------------------------


def test_stage_keeps_its_split_and_passes_pixels_through():
    stage = MetaShiftStage(MetaShiftParams(stage="metashift"))
    assert [v.config for v in stage.variants()] == ["train", "test"]
    images = [np.full((4, 4, 3), i, np.uint8) for i in range(3)]
    batch = Batch(
        keys=["train-1", "test-2", "train-3"],
        images=list(images),
        seeds=[0, 1, 2],
        meta=[{"split": "train", "subsets": ["dog(bed)"]}, {"split": "test"}, {}],
    )
    out = stage.apply(batch, stage.variants()[0])
    assert out.keys == ["train-1", "train-3"]  # the last one by its key prefix
    assert out.images[0] is images[0] and out.meta[0] == {"split": "train", "subsets": ["dog(bed)"]}
    assert stage.apply(batch, stage.variants()[1]).keys == ["test-2"]


# -- source, CLI, build ---------------------------------------------------------------


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value % 256, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for image_id, _, _ in block_ids():
        (root / f"{image_id}.png").write_bytes(_png(int(image_id)))
    return root


def _source_spec(scene_graphs: Path, images: Path, **split) -> dict:
    request = {
        "mode": "domain",
        "classes": ["cat", "dog"],
        "train": {"cat": ["sofa"], "dog": ["sofa", "bed"]},
        "test": {"cat": ["window"], "dog": ["shelf"]},
        **split,
    }
    return {
        "kind": "scene_graph",
        "scene_graphs": str(scene_graphs),
        "images": str(images),
        "image_pattern": "{image_id}.png",
        "split": request,
    }


def test_source_index_load_and_report(scene_graphs, image_folder):
    from pipeline.sources import open_source
    from pipeline.sources.scene_graph import SceneGraphSpec, split_report

    spec = SceneGraphSpec.model_validate(_source_spec(scene_graphs, image_folder))
    source = open_source(spec)
    items = list(source.index())
    assert len(items) == 35 + 30 + 45 + 30
    first = items[0]
    assert (first.key, first.label) == ("train-1135", 0)  # cat(sofa), the first cat image
    data = (image_folder / "1135.png").read_bytes()
    import hashlib

    assert first.sha256 == hashlib.sha256(data).hexdigest()
    loaded = source.load(first)
    assert loaded.image.shape == (8, 8, 3) and int(loaded.image[0, 0, 0]) == 1135 % 256
    assert {k: loaded.meta[k] for k in ("split", "class", "subsets")} == {
        "split": "train",
        "class": "cat",
        "subsets": ["cat(sofa)"],
    }
    report = split_report(_source_spec(scene_graphs, image_folder))
    assert report["counts"] == {"train": 80, "test": 60}
    assert report["classes"]["dog"]["d"]["dog(shelf)"] == pytest.approx(OFFICIAL_D_SHELF)
    assert source.describe()["split_report"] == report


def test_source_oversize_downscales_like_a_folder(scene_graphs, image_folder):
    from pipeline.sources import open_source
    from pipeline.sources.base import SourceError
    from pipeline.sources.scene_graph import SceneGraphSpec

    def first_loaded(**decode):
        source = open_source(SceneGraphSpec.model_validate({**_source_spec(scene_graphs, image_folder), **decode}))
        return source.load(next(iter(source.index())))

    with pytest.raises(SourceError, match=r"8x8 = 64 pixels, over the limit of 40"):
        first_loaded(max_pixels=40)
    loaded = first_loaded(max_pixels=40, oversize="downscale")
    assert loaded.image.shape == (6, 6, 3)             # 8 * sqrt(40 / 64) = 6.3
    assert loaded.meta["notes"] == ["downscaled from 8x8 to 6x6 (area averaging) to fit max_pixels 40"]


def test_source_bad_requests_are_manifest_errors(scene_graphs, image_folder, tmp_path):
    from pipeline.core.manifest import ManifestError
    from pipeline.sources.scene_graph import split_report

    with pytest.raises(ManifestError, match="unknown context 'shelve' for class 'dog'; did you mean 'shelf'"):
        split_report(_source_spec(scene_graphs, image_folder, test={"cat": ["window"], "dog": ["shelve"]}))
    with pytest.raises(ManifestError, match="is not a folder"):
        split_report(_source_spec(scene_graphs, tmp_path / "missing"))


def test_cli_subsets_end_to_end(scene_graphs, tmp_path):
    out = tmp_path / "subsets"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "metashift",
            "subsets",
            "--scene-graphs",
            str(scene_graphs),
            "--out",
            str(out),
            "--png",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "2 classes, 13 subsets from 350 images" in run.stderr
    subsets = json.loads((out / "subsets.json").read_text())
    assert {ctx: s["size"] for ctx, s in subsets["classes"]["dog"].items()} == DOG
    shelf = subsets["classes"]["dog"]["shelf"]["images"]
    assert shelf == sorted(shelf) and set(shelf) == ids_of_block(3) | ids_of_block(4) | ids_of_block(10)
    graph = json.loads((out / "graphs" / "dog.json").read_text())
    assert {
        (e["source"], e["target"]): Fraction(e["weight"]).limit_denominator(10) for e in graph["edges"]
    } == DOG_WEIGHTS
    assert "embedding" not in graph["nodes"][0]  # official protocol: no per-subset embedding
    merged = {n["community"]: n["members"] for n in graph["meta_graph"]["nodes"]}
    assert merged == {
        "dog(bench)": ["dog(bench)", "dog(bike)"],
        "dog(shelf)": ["dog(cabinet)", "dog(shelf)"],
        "dog(sofa)": ["dog(bed)", "dog(sofa)"],
    }
    distances = json.loads((out / "distances.json").read_text())
    assert distances["dog"]["communities"] == ["bench", "shelf", "sofa"]
    assert distances["dog"]["matrix"][1][2] == pytest.approx(OFFICIAL_D_SHELF)
    with Image.open(out / "graphs" / "dog.png") as png:
        assert png.size == (800, 600)
        pixels = np.asarray(png.convert("RGB"))
    assert (pixels != 255).any(axis=2).mean() > 0.02  # something is drawn
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "metashift",
            "sweep",
            "--scene-graphs",
            str(scene_graphs),
            "--class",
            "dog",
            "--test",
            "shelfs",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "did you mean 'shelf'" in bad.stderr


def test_cli_sweep_and_report_in_process(scene_graphs, image_folder, tmp_path, capsys):
    import yaml

    from pipeline.cli import main

    assert (
        main(
            [
                "metashift",
                "sweep",
                "--scene-graphs",
                str(scene_graphs),
                "--class",
                "dog",
                "--test",
                "shelf",
                "--count",
                "3",
                "--protocol",
                "subsets",
            ]
        )
        == 0
    )
    mixes = json.loads(capsys.readouterr().out)["mixes"]
    assert len(mixes) == 3 and mixes[0]["d"] < mixes[-1]["d"]
    # official: communities {sofa, bed} "sofa", {cabinet, shelf} "shelf", {bench, bike} "bench"
    assert main(["metashift", "sweep", "--scene-graphs", str(scene_graphs), "--class", "dog", "--test", "shelf"]) == 0
    official = json.loads(capsys.readouterr().out)
    assert official["protocol"] == "official" and [m["train"] for m in official["mixes"]] == [["bench", "sofa"]]
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(_manifest(scene_graphs, image_folder)))
    assert main(["metashift", "report", str(manifest)]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"train": 80, "test": 60}
    bad = _manifest(scene_graphs, image_folder)
    bad["source"]["split"]["train"]["cat"] = ["sofas"]
    manifest.write_text(yaml.safe_dump(bad))
    assert main(["metashift", "report", str(manifest)]) == 2
    assert "unknown context 'sofas' for class 'cat'; did you mean 'sofa'" in capsys.readouterr().err


def _manifest(scene_graphs: Path, images: Path) -> dict:
    return {
        "name": "metashift-test",
        "version": "1.0.0",
        "seed": 0,
        "source": _source_spec(scene_graphs, images),
        "shifts": [{"stage": "metashift"}],
        "output": {"formats": ["webdataset"], "samples_per_shard": 50},
    }


def test_manifest_in_repo_validates():
    from pipeline.core.manifest import load_manifest

    release = load_manifest(REPO / "manifests" / "metashift.yaml")
    assert release.source.kind == "scene_graph" and release.source.split.classes == ["cat", "dog"]


def test_build_release_end_to_end(scene_graphs, tmp_path):
    """Train and test land in their own configs with meta.split; pixels are the files' pixels;
    a missing image is an error row; provenance carries d."""
    import tarfile

    import pyarrow.parquet as pq

    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release

    images = tmp_path / "images"
    images.mkdir()
    for image_id, _, _ in block_ids():
        if image_id != "1000":  # dog(sofa+bed), a training image
            (images / f"{image_id}.png").write_bytes(_png(int(image_id)))
    result = build_release(parse_release(_manifest(scene_graphs, images)), tmp_path / "release", workers=1)
    assert result.counts == {"total": 141, "ok": 139, "rejected": 0, "error": 2}  # 1000 fails in both configs

    rows = pq.read_table(tmp_path / "release" / "samples.parquet").to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["config"], r["split"]) for r in ok} == {("train", "train"), ("test", "test")}
    assert sum(r["config"] == "train" for r in ok) == 79 and sum(r["config"] == "test" for r in ok) == 60
    errors = [r for r in rows if r["status"] == "error"]
    assert {r["key"] for r in errors} == {"train-1000"} and "image file not found" in errors[0]["reason"]

    with tarfile.open(tmp_path / "release" / "data" / "test" / "test-00002.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    doc = json.loads(members["test-1040.json"])  # dog(shelf), test
    assert doc["meta"]["split"] == "test" and doc["meta"]["subsets"] == ["dog(shelf)"]
    assert members["test-1040.cls"] == b"1"
    pixels = np.asarray(Image.open(io.BytesIO(members["test-1040.png"])))
    assert pixels.shape == (8, 8, 3) and (pixels == 1040 % 256).all()

    provenance = json.loads((tmp_path / "release" / "provenance.json").read_text())
    report = provenance["source"]["describe"]["split_report"]
    assert report["classes"]["dog"]["d"]["dog(shelf)"] == pytest.approx(OFFICIAL_D_SHELF)
