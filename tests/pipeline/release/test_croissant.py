"""croissant.json: Croissant 1.0, validated and read back with mlcroissant."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from release_fixtures import build_tiny_release

from pipeline.release.croissant import croissant_document, write_croissant


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_tiny_release(tmp_path_factory.mktemp("croissant"))


def test_distribution_lists_every_shard_with_its_sha256(release):
    doc = json.loads((release / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0" and doc["@type"] == "sc:Dataset"
    objects = {d["contentUrl"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    tars = sorted(p.relative_to(release).as_posix() for p in release.glob("data/*/*.tar"))
    assert sorted(u for u in objects if u.endswith(".tar")) == tars and len(tars) == 8
    for url, entry in objects.items():
        assert entry["sha256"] == hashlib.sha256((release / url).read_bytes()).hexdigest()
    file_sets = [d for d in doc["distribution"] if d["@type"] == "cr:FileSet"]
    assert [f["@id"] for f in file_sets] == ["images/contrast-1", "images/contrast-3",
                                             "images/gaussian_noise-1", "images/gaussian_noise-3"]
    assert file_sets[0]["containedIn"] == [{"@id": "shard/contrast-1/test-00000"},
                                           {"@id": "shard/contrast-1/test-00001"}]
    assert "Hendrycks" in doc["citeAs"] and "@misc{tiny" in doc["citeAs"]


def _validate(path) -> subprocess.CompletedProcess:
    cli = shutil.which("mlcroissant", path=str(Path(sys.executable).parent))
    return subprocess.run([cli, "validate", "--jsonld", str(path)], capture_output=True, text=True,
                          timeout=120)


def test_mlcroissant_validate_passes_and_catches_a_broken_reference(release, tmp_path):
    ok = _validate(release / "croissant.json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    mlc = pytest.importorskip("mlcroissant")
    broken = json.loads((release / "croissant.json").read_text())
    broken["distribution"][-2]["containedIn"] = [{"@id": "shard/nowhere"}]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(mlc.ValidationError, match="nowhere"):
        mlc.Dataset(jsonld=str(tmp_path / "broken.json"))


def test_records_read_back_through_mlcroissant(release):
    mlc = pytest.importorskip("mlcroissant")
    dataset = mlc.Dataset(jsonld=str(release / "croissant.json"))
    samples = list(dataset.records("samples"))
    assert len(samples) == 12
    assert sorted({s["samples/config"].decode() for s in samples}) == [
        "contrast-1", "contrast-3", "gaussian_noise-1", "gaussian_noise-3"]
    images = list(itertools.islice(dataset.records("gaussian_noise-3"), 5))
    assert sorted(r["gaussian_noise-3/filename"].decode() for r in images) == [
        "astronaut-000000.png", "chelsea-000001.png", "coffee-000002.png"]
    assert {r["gaussian_noise-3/image"].size for r in images} == {(32, 32)}


def test_rewrite_is_deterministic_and_skips_configs_without_shards(release):
    before = (release / "croissant.json").read_bytes()
    write_croissant(release)
    assert (release / "croissant.json").read_bytes() == before
    provenance = json.loads((release / "provenance.json").read_text())
    provenance["configs"]["contrast-3"]["shards"] = []
    doc = croissant_document(provenance)
    assert "contrast-3" not in [r["@id"] for r in doc["recordSet"]]
    assert "samples" not in [r["@id"] for r in doc["recordSet"]]          # no table given
