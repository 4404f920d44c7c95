"""Shard fingerprints, field by field: every manifest or source change that alters a
shard's bytes changes the fingerprint of exactly the shards it alters, and changes
that alter no byte change none."""

from __future__ import annotations

import copy

import pytest

from pipeline.core.manifest import parse_release
from pipeline.core.plan import SourceIndex, plan_release
from pipeline.sources import SourceItem

BASE = {
    "name": "fp", "version": "1.0.0", "seed": 7,
    "source": {"kind": "samples", "images": ["astronaut"], "count": 5, "size": 32},
    "shifts": [{"stage": "corruptions", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]}],
    "output": {"formats": ["webdataset"], "samples_per_shard": 2},
}
ITEMS = [SourceItem(f"img-{i}", f"{i:064x}", i % 2, f"img-{i}.png") for i in range(5)]


def fingerprints(manifest: dict | None = None, items: list[SourceItem] = ITEMS, **plan_kwargs) -> dict[str, str]:
    release = parse_release(copy.deepcopy(manifest or BASE))
    plan = plan_release(release, index=SourceIndex.from_items(items), source=object(), **plan_kwargs)
    return {unit.shard_id: unit.fingerprint for unit in plan.units}


def changed(manifest: dict) -> set[str]:
    before, after = fingerprints(), fingerprints(manifest)
    assert set(before) <= set(after) or set(after) <= set(before)
    return {shard for shard in before.keys() & after.keys() if before[shard] != after[shard]}


def edit(**changes) -> dict:
    """BASE with dotted paths replaced, e.g. edit(**{"output.encoding": "jpg"})."""
    manifest = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = manifest
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    return manifest


ALL = set(fingerprints())


def test_the_plan_has_one_distinct_fingerprint_per_shard():
    assert len(ALL) == 12
    assert len(set(fingerprints().values())) == 12


@pytest.mark.parametrize("path, value", [
    ("seed", 8),
    ("name", "fp-renamed"),                      # stands in every sample's provenance
    ("version", "1.0.1"),
    ("output.encoding", "jpg"),
    ("output.formats", ["webdataset", "zarr"]),
])
def test_a_release_wide_change_changes_every_fingerprint(path, value):
    manifest = edit(**{path: value})
    if path == "output.formats":
        manifest["output"]["image_size"] = [32, 32]
    assert changed(manifest) == ALL


def test_jpeg_quality_changes_jpeg_shards_and_leaves_png_shards_alone():
    jpeg = edit(**{"output.encoding": "jpg"})
    before = fingerprints(jpeg)
    jpeg["output"]["jpeg_quality"] = 80
    after = fingerprints(jpeg)
    assert all(before[s] != after[s] for s in before)
    assert changed(edit(**{"output.jpeg_quality": 80})) == set()


def test_zarr_image_size_changes_every_fingerprint():
    with_zarr = edit(**{"output.formats": ["webdataset", "zarr"], "output.image_size": [32, 32]})
    before = fingerprints(with_zarr)
    with_zarr["output"]["image_size"] = [32, 48]
    after = fingerprints(with_zarr)
    assert all(before[s] != after[s] for s in before)


def test_the_filters_fingerprint_changes_every_fingerprint():
    before = fingerprints()
    after = fingerprints(filters_fingerprint={"rule": "clip >= 0.2"})
    assert all(before[s] != after[s] for s in before)


def test_a_stage_version_bump_changes_that_stages_shards(monkeypatch):
    from stages.corruptions import CorruptionStage

    before = fingerprints()
    monkeypatch.setattr(CorruptionStage, "version", CorruptionStage.version + ".post1")
    after = fingerprints()
    assert all(before[s] != after[s] for s in before)


@pytest.mark.parametrize("field", ["key", "sha256", "label"])
def test_a_changed_source_item_changes_only_the_shards_of_its_slice(field):
    items = list(ITEMS)
    old = items[2]
    items[2] = SourceItem(old.key + "x" if field == "key" else old.key,
                          "f" * 64 if field == "sha256" else old.sha256,
                          7 if field == "label" else old.label, old.ref)
    before, after = fingerprints(), fingerprints(items=items)
    differ = {s for s in before if before[s] != after[s]}
    # items 2 and 3 make shard 1 of every config
    assert differ == {f"{c}/test-00001" for c in ("gaussian_noise-1", "gaussian_noise-3", "contrast-1", "contrast-3")}


def test_an_image_edited_in_place_under_the_same_key_is_rebuilt(tmp_path):
    """The real folder source: same key, new bytes -> new sha256 -> new fingerprint."""
    import cv2
    import numpy as np

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    manifest = edit(source={"kind": "folder", "path": str(folder)})
    manifest["output"]["samples_per_shard"] = 1

    def plan():
        return {u.shard_id: u.fingerprint for u in plan_release(parse_release(copy.deepcopy(manifest))).units}

    before = plan()
    cv2.imwrite(str(folder / "img1.png"), np.full((16, 16, 3), 41, np.uint8))
    after = plan()
    assert {s for s in before if before[s] != after[s]} == {
        f"{c}/test-00001" for c in ("gaussian_noise-1", "gaussian_noise-3", "contrast-1", "contrast-3")}


def test_an_item_added_at_the_end_changes_only_the_last_slice():
    items = [*ITEMS, SourceItem("img-5", "5" * 64, 1, "img-5.png")]
    before, after = fingerprints(), fingerprints(items=items)
    assert {s for s in before if before[s] != after[s]} == {
        f"{c}/test-00002" for c in ("gaussian_noise-1", "gaussian_noise-3", "contrast-1", "contrast-3")}


def test_a_changed_severity_list_leaves_the_other_configs_alone():
    after = fingerprints(edit(**{"shifts.0.severities": [3, 1, 5]}))
    assert {s: after[s] for s in ALL} == fingerprints()


def test_a_new_shift_entry_leaves_the_existing_shards_alone():
    manifest = copy.deepcopy(BASE)
    manifest["shifts"].append({"stage": "corruptions", "corruptions": ["pixelate"], "severities": [2]})
    after = fingerprints(manifest)
    assert len(after) == 15 and {s: after[s] for s in ALL} == fingerprints()


@pytest.mark.parametrize("path, value", [
    ("description", "a new description"),
    ("license", "mit"),
    ("output.jpeg_quality", 50),                 # PNG shards: quality is unused
])
def test_a_change_that_alters_no_shard_byte_changes_no_fingerprint(path, value):
    assert changed(edit(**{path: value})) == set()


# --- the recipe itself: journals of existing releases hold these values, so a changed recipe
# --- rebuilds every release; it is restated here from its definition --------------------------------


def _canonical(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def test_the_fingerprint_recipe_is_stable():
    import hashlib

    manifest = edit(**{"output.encoding": "jpg", "output.jpeg_quality": 80})
    release = parse_release(copy.deepcopy(manifest))
    plan = plan_release(release, index=SourceIndex.from_items(ITEMS), source=object(),
                        filters_fingerprint={"f": 1})
    common = _canonical({"seed": 7, "name": "fp", "version": "1.0.0", "encoding": "jpg", "quality": 80,
                         "formats": ["webdataset"], "image_size": None, "filters": {"f": 1},
                         "decode": {"max_pixels": None, "oversize": None}})   # a samples source never downscales
    stage_fp = hashlib.sha256(_canonical(plan.stages[0].work_fingerprint()).encode()).hexdigest()
    rows = "".join(f"{i.key}\x1f{i.sha256}\x1f{i.label!r}\n" for i in ITEMS[2:4])
    slice_digest = hashlib.sha256(rows.encode()).hexdigest()
    unit = next(u for u in plan.units if u.shard_id == "contrast-3/test-00001")
    expected = hashlib.sha256(f"{common}|{stage_fp}|{unit.variant.token()}|{slice_digest}".encode()).hexdigest()
    assert unit.fingerprint == expected


def test_the_plan_carries_its_index_source_stages_and_units():
    source = object()
    index = SourceIndex.from_items(ITEMS)
    plan = plan_release(parse_release(copy.deepcopy(BASE)), index=index, source=source)
    assert plan.index is index and plan.source is source
    assert [s.name for s in plan.stages] == ["corruptions"]
    assert [(i, v.config) for i, v in plan.variants] == [
        (0, "gaussian_noise-1"), (0, "gaussian_noise-3"), (0, "contrast-1"), (0, "contrast-3")]
    assert plan.outputs == {c: 1 for c in ("gaussian_noise-1", "gaussian_noise-3", "contrast-1", "contrast-3")}
    assert plan.outputs_per_input("contrast-3") == 1
    unit = plan.units[5]
    assert (unit.shard_id, unit.stage_index, unit.unit_index, unit.start, unit.stop) == (
        "gaussian_noise-3/test-00002", 0, 2, 4, 5)
    assert unit.variant.config == "gaussian_noise-3" and unit.variant.params["severity"] == 3


def test_the_source_index_hands_back_its_items():
    index = SourceIndex.from_items(ITEMS)
    assert len(index) == 5 and index.item(3) == ITEMS[3] and index.items(1, 3) == ITEMS[1:3]
    assert index.refs == [f"img-{i}.png" for i in range(5)]
    assert index.digest() == index.slice_digest(0, 5) != index.slice_digest(1, 5)


def test_a_missing_source_folder_is_bad_input_naming_the_source(tmp_path):
    from pipeline.core.manifest import ManifestError

    manifest = edit(source={"kind": "folder", "path": str(tmp_path / "missing")})
    with pytest.raises(ManifestError, match=r"^source: .*missing"):
        plan_release(parse_release(manifest))


def test_a_stage_whose_model_is_missing_is_bad_input_naming_the_shift(monkeypatch):
    from pipeline.core.manifest import ManifestError
    from stages.corruptions import CorruptionStage

    def missing(self):
        raise FileNotFoundError("no weights at /models/x")

    monkeypatch.setattr(CorruptionStage, "work_fingerprint", missing)
    with pytest.raises(ManifestError, match=r"^shifts\.0 \(corruptions\): no weights at /models/x$"):
        fingerprints()


def test_outputs_per_input_are_asked_of_each_variant(monkeypatch):
    from stages.corruptions import CorruptionStage

    monkeypatch.setattr(CorruptionStage, "outputs_per_input", lambda self, variant: variant.params["severity"])
    plan = plan_release(parse_release(copy.deepcopy(BASE)), index=SourceIndex.from_items(ITEMS), source=object())
    assert plan.outputs == {"gaussian_noise-1": 1, "gaussian_noise-3": 3, "contrast-1": 1, "contrast-3": 3}


def test_index_time_tags_are_fingerprinted_and_their_absence_keeps_the_recipe():
    import hashlib

    def digest(meta):
        return SourceIndex.from_items([SourceItem("k", "ab" * 32, 1, "a.png", meta)]).slice_digest(0, 1)

    plain = hashlib.sha256(f"k\x1f{'ab' * 32}\x1f1\n".encode()).hexdigest()
    assert digest(None) == plain                           # sources without tags: unchanged recipe
    tagged = digest({"split": "train", "subsets": ["dog(sofa)"]})
    assert tagged != plain
    assert digest({"split": "train", "subsets": ["dog(bed)"]}) != tagged   # a moved subset tag rebuilds
    assert digest({"subsets": ["dog(sofa)"], "split": "train"}) == tagged  # key order is not content
    index = SourceIndex.from_items([SourceItem("k", "ab" * 32, 1, "a.png", {"group": "minority"})])
    assert index.item(0).meta == {"group": "minority"} and index.items(0, 1)[0].ref == "a.png"
