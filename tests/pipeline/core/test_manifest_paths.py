"""Relative paths in a manifest file resolve against the manifest's folder."""

import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import AfterValidator, BaseModel

from pipeline.core.manifest import load_manifest, manifest_sha256, parse_release
from pipeline.core.plan import plan_release
from pipeline.sources import available_sources
from stages import available_stages
from stages.base import MANIFEST_DIR, ManifestPathOrId, resolve_manifest_path

SHIFTS = [{"stage": "corruptions", "corruptions": ["pixelate"], "severities": [1]}]
# field names that hold a file, folder or URL in a stage's or source's model
PATH_NAMES = {"path", "images", "annotations", "labels_csv", "scene_graphs", "urls", "include", "model"}
NOT_PATHS = {"source samples.images"}   # names of bundled sample photographs


def write(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "release.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def release(source: dict, **more) -> dict:
    return {"name": "paths", "version": "1.0.0", "source": source, "shifts": SHIFTS, **more}


def test_source_paths_join_the_manifest_folder_not_the_working_directory(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    manifest = write(tmp_path / "project" / "manifests", release(
        {"kind": "folder", "path": "../images", "labels_csv": "labels.csv"}))
    found = load_manifest(manifest).source
    assert found.path == str(tmp_path / "project" / "images")
    assert found.labels_csv == str(tmp_path / "project" / "manifests" / "labels.csv")
    # relative to the working directory, the manifest path itself is resolved first
    assert load_manifest(Path("../project/manifests/release.yaml")).source.path == str(tmp_path / "project/images")


def test_provenance_and_fingerprints_record_paths_as_written(tmp_path):
    data = release({"kind": "folder", "path": "../images", "labels_csv": "labels.csv"})
    first, second = (load_manifest(write(tmp_path / where / "m", data)) for where in ("a", "b"))
    assert (first.source.path, second.source.path) == (str(tmp_path / "a/images"), str(tmp_path / "b/images"))
    dumped = first.model_dump(mode="json")["source"]
    assert (dumped["path"], dumped["labels_csv"]) == ("../images", "labels.csv")
    assert manifest_sha256(first) == manifest_sha256(second) == manifest_sha256(parse_release(data))
    assert first.model_dump()["source"]["path"] == str(tmp_path / "a/images")   # python dumps: the joined path


def test_absolute_home_and_url_paths_stay_as_written(tmp_path):
    urls = ["s3://bucket/a.tar", "/data/b.tar", "~/c.tar", "shards/train-{000..002}.tar", "./d.tar"]
    found = load_manifest(write(tmp_path, release({"kind": "webdataset", "urls": urls}))).source.urls
    assert found == ["s3://bucket/a.tar", "/data/b.tar", "~/c.tar", f"{tmp_path}/shards/train-{{000..002}}.tar",
                     f"{tmp_path}/d.tar"]
    one = load_manifest(write(tmp_path, release({"kind": "webdataset", "urls": "x.tar"}))).source.urls
    assert one == f"{tmp_path}/x.tar"


def test_a_manifest_not_read_from_a_file_keeps_paths_relative_to_the_working_directory():
    assert parse_release(release({"kind": "npz", "path": "data/x.npz"})).source.path == "data/x.npz"


class PathOrId(BaseModel):
    model: ManifestPathOrId


@pytest.mark.parametrize(("value", "exists", "expected"), [
    ("org/model", False, "org/model"),          # a hub repo id
    ("org/model", True, "{base}/org/model"),    # a folder next to the manifest wins
    ("tiny-sd", False, "tiny-sd"),
    ("./tiny-sd", False, "{base}/tiny-sd"),     # an explicit relative path, even if missing
    ("../tiny-sd", False, "{parent}/tiny-sd"),
    ("/abs/tiny-sd", False, "/abs/tiny-sd"),
])
def test_a_path_or_hub_id_joins_only_a_local_path(tmp_path, value, exists, expected):
    base = tmp_path / "m"
    if exists:
        (base / value).mkdir(parents=True)
    found = PathOrId.model_validate({"model": value}, context={MANIFEST_DIR: str(base)}).model
    assert found == expected.format(base=base, parent=tmp_path)


def test_a_relative_folder_source_indexes_from_another_working_directory(tmp_path, monkeypatch):
    images = tmp_path / "project" / "images"
    images.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(images / f"im{i}.png")
    manifest = write(tmp_path / "project", release({"kind": "folder", "path": "images"}))
    monkeypatch.chdir(tmp_path)
    plan = plan_release(load_manifest(manifest))
    assert len(plan.index) == 3 and len(plan.units) == 1


def test_an_included_filters_file_joins_the_manifest_folder(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "thresholds.yaml").write_text(yaml.safe_dump({"thresholds": {"quality_std": 0.25}}))
    manifest = write(tmp_path / "cfg", release({"kind": "samples", "count": 2, "size": 16},
                                               filters={"include": "thresholds.yaml",
                                                        "chain": [{"filter": "quality"}]}))
    monkeypatch.chdir(tmp_path)
    filters = load_manifest(manifest).filters
    assert filters.include == str(tmp_path / "cfg" / "thresholds.yaml")
    assert list(filters.thresholds) == ["quality_std"] and filters.thresholds["quality_std"].min == 0.25


def _annotations(annotation) -> list:
    """The annotation and every type nested in it (unions, lists, Annotated)."""
    found = [annotation]
    for arg in typing.get_args(annotation):
        found.extend(_annotations(arg))
    return found


def _path_fields(model: type[BaseModel], where: str, seen: set) -> list[tuple[str, object]]:
    if model in seen:
        return []
    seen.add(model)
    out = []
    for name, field in model.model_fields.items():
        nested = [a for a in _annotations(field.rebuild_annotation())
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        for sub in nested:
            out.extend(_path_fields(sub, f"{where}.{name}", seen))
        if name in PATH_NAMES and f"{where}.{name}" not in NOT_PATHS:
            out.append((f"{where}.{name}", field))
    return out


def test_every_path_field_of_every_stage_and_source_is_a_manifest_path():
    from stages.filters import FiltersSpec

    models = [(f"source {k}", c.Spec) for k, c in available_sources().items()]
    models += [(f"stage {k}", c.Params) for k, c in available_stages().items()]
    models += [("filters", FiltersSpec)]
    seen: set = set()
    fields = [f for where, model in models for f in _path_fields(model, where, seen)]
    plain = [where for where, field in fields if not _resolves(field)]
    assert plain == []
    assert len(fields) == 18, [where for where, _ in fields]


def _resolves(field) -> bool:
    """Whether the field (or every str in its union) passes through the manifest-path resolver."""
    metadata = list(field.metadata)
    for a in _annotations(field.annotation):
        metadata.extend(getattr(a, "__metadata__", ()))
    funcs = {m.func for m in metadata if isinstance(m, AfterValidator)}
    return bool(funcs & {resolve_manifest_path, typing.get_args(ManifestPathOrId)[1].func})
