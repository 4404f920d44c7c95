"""End-to-end builds on a real LocalCluster, read back with webdataset and zarr."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import zarr

from pipeline.core.build import build_release
from pipeline.core.manifest import parse_release
from pipeline.release.provenance_schema import validate_provenance
from pipeline.release.verify import verify_release
from stages.corruptions import corrupt

ROOT = Path(__file__).resolve().parents[3]


def shard_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "data").glob("*/*.tar"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tests.conftest import TINY_RELEASE

    out = tmp_path_factory.mktemp("release")
    result = build_release(parse_release(TINY_RELEASE), out, workers=2)
    return out, result


def test_build_writes_every_shard_and_counts_add_up(built):
    out, result = built
    assert result.planned == result.built == 12
    assert result.counts == {"total": 20, "ok": 20, "rejected": 0, "error": 0}
    assert len(shard_hashes(out)) == 12
    prov = json.loads((out / "provenance.json").read_text())
    validate_provenance(prov)
    assert prov["counts"]["total"] == 20
    assert prov["configs"]["contrast-5"]["shards"] == [f"data/contrast-5/test-0000{i}.tar" for i in range(3)]
    assert len((out / "journal.jsonl").read_text().splitlines()) == 12
    assert verify_release(out).ok


def test_shards_read_back_with_webdataset(built):
    out, _ = built
    urls = sorted(str(p) for p in (out / "data" / "contrast-5").glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [
        "astronaut-000000", "chelsea-000001", "astronaut-000003", "coffee-000002", "chelsea-000004"]
    first = samples[0]
    assert set(first) >= {"__key__", "png", "json"}
    assert first["png"].shape == (48, 48, 3) and first["png"].dtype == np.uint8
    doc = first["json"]
    assert doc["shift"] == {"stage": "corruptions", "stage_version": doc["shift"]["stage_version"],
                            "config": "contrast-5", "corruption": "contrast", "severity": 5}
    assert doc["source"]["sha256"] and len(doc["source"]["sha256"]) == 64
    # contrast is deterministic: the stored image equals the library function on the clean source
    from pipeline.sources.samples import SamplesSource, SamplesSpec

    source = SamplesSource(SamplesSpec(**TINY_SOURCE))
    clean = source.load(next(i for i in source.index() if i.key == "astronaut-000000")).image
    assert np.array_equal(first["png"], corrupt(clean, "contrast", 5, seed=doc["seed"]))


TINY_SOURCE = {"kind": "samples", "images": ["astronaut", "chelsea", "coffee"], "count": 5, "size": 48}


def test_zarr_store_matches_shards(built):
    out, _ = built
    group = zarr.open_group(str(out / "zarr" / "gaussian_noise-5.zarr"), mode="r")
    assert group["images"].shape == (5, 48, 48, 3)
    assert group["images"].shards == (2, 48, 48, 3)
    assert list(group["keys"][:]) == ["astronaut-000000", "chelsea-000001", "coffee-000002",
                                      "astronaut-000003", "chelsea-000004"]
    assert group["valid"][:].all()
    urls = sorted(str(p) for p in (out / "data" / "gaussian_noise-5").glob("*.tar"))
    by_key = {s["__key__"]: s["png"] for s in wds.WebDataset(urls, shardshuffle=False).decode("rgb8")}
    for i, key in enumerate(group["keys"][:]):
        assert np.array_equal(group["images"][i], by_key[key])


def test_samples_parquet_has_a_row_per_sample(built):
    out, _ = built
    table = pq.read_table(out / "samples.parquet").to_pandas()
    assert len(table) == 20
    assert set(table["status"]) == {"ok"}
    row = table[(table.key == "coffee-000002") & (table.config == "gaussian_noise-1")].iloc[0]
    assert json.loads(row["shift"])["severity"] == 1
    assert row["shard"] == "data/gaussian_noise-1/test-00001.tar"


def test_rebuild_is_a_no_op_and_verify_catches_a_flipped_byte(built, tmp_path):
    out, _ = built
    before = shard_hashes(out)
    again = build_release(parse_release(TINY_RELEASE_COPY()), out, workers=1)
    assert again.built == 0 and again.skipped == 12 and shard_hashes(out) == before
    victim = out / "data" / "contrast-1" / "test-00001.tar"
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = verify_release(out)
    assert not report.ok and "contrast-1/test-00001.tar: sha256" in report.problems[0]
    repaired = build_release(parse_release(TINY_RELEASE_COPY()), out, workers=1)
    assert repaired.built == 1 and shard_hashes(out) == before


def TINY_RELEASE_COPY():
    from tests.conftest import TINY_RELEASE

    return json.loads(json.dumps(TINY_RELEASE))


def test_one_and_two_workers_give_identical_shards(built, tmp_path):
    out, _ = built
    single = tmp_path / "single"
    build_release(parse_release(TINY_RELEASE_COPY()), single, workers=1)
    assert shard_hashes(single) == shard_hashes(out)


def test_parameter_change_rebuilds_only_its_shards(tmp_path, tiny_release):
    tiny_release["output"]["formats"] = ["webdataset"]
    del tiny_release["output"]["image_size"]
    build_release(parse_release(tiny_release), tmp_path, workers=1)
    tiny_release["shifts"][0]["severities"] = [1, 3]
    result = build_release(parse_release(tiny_release), tmp_path, workers=1)
    assert result.built == 6 and result.skipped == 6
    assert sorted(result.removed) == [f"{c}-5/test-0000{i}" for c in ("contrast", "gaussian_noise") for i in range(3)]
    assert not (tmp_path / "data" / "contrast-5").exists()
    assert verify_release(tmp_path).ok


def test_resume_after_sigkill_gives_the_same_release(tmp_path, tiny_release, write_manifest):
    tiny_release["source"]["count"] = 12
    tiny_release["output"]["samples_per_shard"] = 1
    manifest = write_manifest(tiny_release)
    reference = tmp_path / "reference"
    build_release(parse_release(tiny_release), reference, workers=1)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline", "build", str(manifest), "--out", str(out), "--workers", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    journal = out / "journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before_kill = len(journal.read_text().splitlines())
    assert 3 <= finished_before_kill < 48, "the kill should land mid-build"
    assert not (out / "provenance.json").exists()

    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert shard_hashes(out) == shard_hashes(reference)
    assert not list(out.rglob("*.tmp-*"))
    assert verify_release(out).ok


def test_bad_input_found_while_planning_leaves_no_folder_but_keeps_an_existing_one(tmp_path):
    from pipeline.core.manifest import ManifestError

    manifest = parse_release({"name": "m", "version": "1", "seed": 1,
                              "source": {"kind": "folder", "path": str(tmp_path / "missing")},
                              "shifts": [{"stage": "corruptions", "corruptions": ["contrast"], "severities": [1]}]})
    fresh = tmp_path / "fresh"
    with pytest.raises(ManifestError, match="source"):
        build_release(manifest, fresh, workers=1)
    assert not fresh.exists()          # the lock folder the build created is gone again
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(ManifestError, match="source"):
        build_release(manifest, kept, workers=1)
    assert (kept / "notes.txt").read_text() == "mine"
