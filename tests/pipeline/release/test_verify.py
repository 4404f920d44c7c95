"""`verify` against one tiny release, tampered with in every way it must notice."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from pipeline.core.build import build_release
from pipeline.core.manifest import parse_release
from pipeline.release.verify import document_sha256, verify_release
from pipeline.release.verify_zarr import check_zarr
from pipeline.writers.files import ReleaseStore
from pipeline.writers.zarr_store import ZarrLayout, ensure_store, write_region

ROOT = Path(__file__).resolve().parents[3]
STORE = "zarr/contrast-1.zarr"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    from tests.conftest import TINY_RELEASE

    out = tmp_path_factory.mktemp("pristine")
    build_release(parse_release(json.loads(json.dumps(TINY_RELEASE))), out, workers=1)
    assert verify_release(out).problems == []
    return out


@pytest.fixture
def release(pristine, tmp_path):
    out = tmp_path / "release"
    shutil.copytree(pristine, out)
    return out


def problems(out: Path) -> list[str]:
    report = verify_release(out)
    assert all("\n" not in p for p in report.problems)
    return report.problems


def rewrite_provenance(out: Path, edit) -> None:
    """Edit provenance.json and re-seal it, as a build with that bug would have written it."""
    prov = json.loads((out / "provenance.json").read_text())
    edit(prov)
    prov["document_sha256"] = document_sha256(prov)
    (out / "provenance.json").write_text(json.dumps(prov))


def edit_rows(out: Path, edit) -> None:
    table = pq.read_table(out / "samples.parquet")
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out / "samples.parquet")


def test_flipped_byte_in_a_zarr_chunk(release):
    chunk = release / STORE / "images" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert [p for p in problems(release) if p.startswith(f"{STORE} [2:4]")], problems(release)


def test_deleted_zarr_chunk(release):
    (release / STORE / "images" / "c" / "2" / "0" / "0" / "0").unlink()
    assert [p.split(":")[0] for p in problems(release)] == [f"{STORE} [4"]
    assert "digest" in problems(release)[0]


def test_replaced_zarr_chunk(release):
    chunks = release / STORE / "images" / "c"
    shutil.copy(chunks / "0" / "0" / "0" / "0", chunks / "1" / "0" / "0" / "0")
    assert [p[:len(STORE) + 6] for p in problems(release)] == [f"{STORE} [2:4]"]


def test_deleted_zarr_store(release):
    shutil.rmtree(release / STORE)
    assert problems(release) == [f"{STORE}: missing (provenance lists this Zarr store)"]


def test_pixel_edited_through_zarr(release):
    images = zarr.open_group(str(release / STORE), mode="r+")["images"]
    images[3, 10, 10, 0] = (int(images[3, 10, 10, 0]) + 1) % 256
    assert len(problems(release)) == 1 and problems(release)[0].startswith(f"{STORE} [2:4]: digest")


def test_valid_mask_cleared_for_an_ok_slot(release):
    zarr.open_group(str(release / STORE), mode="r+")["valid"][1] = False
    found = problems(release)
    assert found == [f"{STORE}: slot 1 (chelsea-000001) valid=False but its row's status is 'ok'"]


def test_valid_mask_against_statuses(tmp_path):
    """valid must be true exactly for ok rows: rejected and error slots are false."""
    layout = ZarrLayout(path=str(tmp_path / "zarr" / "c.zarr"), length=3, shard_len=3, height=8, width=8, channels=3)
    ensure_store(layout, {})
    image = np.full((8, 8, 3), 7, np.uint8)
    write_region(layout, 0, [("a", 0, image), ("b", 1, None), ("c", 2, None)])
    prov = {"zarr": ["zarr/c.zarr"], "shards": []}
    rows = [{"config": "c", "key": "a", "status": "ok"}, {"config": "c", "key": "b", "status": "rejected"},
            {"config": "c", "key": "d", "status": "error"}]

    class Report(list):
        add = list.append

    found = Report()
    check_zarr(ReleaseStore(tmp_path), prov, rows, found)
    assert found == ["zarr/c.zarr: slot 2 key 'c' has no row in samples.parquet"]
    rows[2]["key"] = "c"
    found.clear()
    check_zarr(ReleaseStore(tmp_path), prov, rows, found)
    assert found == []
    for slot, status in ((1, "rejected"), (2, "error")):
        zarr.open_group(layout.path, mode="r+")["valid"][slot] = True
        found.clear()
        check_zarr(ReleaseStore(tmp_path), prov, rows, found)
        key = "bc"[slot - 1]
        assert found == [f"zarr/c.zarr: slot {slot} ({key}) valid=True but its row's status is '{status}'"]
        zarr.open_group(layout.path, mode="r+")["valid"][slot] = False


def test_stray_tar_and_stray_config_folder(release):
    shutil.copy(release / "data" / "contrast-1" / "test-00000.tar", release / "data" / "contrast-1" / "test-00009.tar")
    (release / "data" / "fog-3").mkdir()
    shutil.copy(release / "data" / "contrast-1" / "test-00000.tar", release / "data" / "fog-3" / "test-00000.tar")
    assert problems(release) == [
        "data/contrast-1/test-00009.tar: stray file (not a shard listed in provenance)",
        "data/fog-3: stray folder (no config 'fog-3' in provenance)",
        "data/fog-3/test-00000.tar: stray file (not a shard listed in provenance)"]


def test_samples_row_with_a_changed_key(release):
    def edit(rows):
        row = next(r for r in rows if r["key"] == "coffee-000002" and r["config"] == "contrast-5")
        row["key"] = "coffee-999999"

    edit_rows(release, edit)
    found = problems(release)
    assert any(p.startswith("data/contrast-5/test-00001.tar: holds 1 key(s) samples.parquet does not place "
                            "here (coffee-000002, …) and lacks 1 it does (coffee-999999, …)") for p in found)
    assert "zarr/contrast-5.zarr: slot 2 key 'coffee-000002' has no row in samples.parquet" in found


def test_samples_row_with_a_changed_status(release):
    def edit(rows):
        next(r for r in rows if r["key"] == "chelsea-000004" and r["config"] == "contrast-1")["status"] = "error"

    edit_rows(release, edit)
    found = problems(release)
    assert "samples.parquet: 19 ok rows, provenance says 20" in found
    assert "samples.parquet: 1 error rows, provenance says 0" in found
    assert "samples.parquet: 1 error rows for contrast-1, provenance says 0" in found
    assert f"{STORE}: slot 4 (chelsea-000004) valid=True but its row's status is 'error'" in found


def test_duplicate_row(release):
    edit_rows(release, lambda rows: rows.append(dict(rows[0])))
    found = problems(release)
    first = pq.read_table(release / "samples.parquet")["key"][0]
    assert f"samples.parquet: 1 duplicate (config, key) rows, e.g. {first}" in found
    assert "samples.parquet: 21 rows, provenance total is 20" in found


@pytest.mark.parametrize("field", ["license", "manifest"])
def test_edited_provenance(release, field):
    prov = json.loads((release / "provenance.json").read_text())
    if field == "license":
        prov["release"]["license"] = prov["manifest"]["license"] = "cc0-1.0"
    else:
        prov["manifest"]["seed"] = 8
    (release / "provenance.json").write_text(json.dumps(prov))
    found = problems(release)
    assert found[0] == "provenance.json: content does not match its document_sha256 (edited after the build)"
    if field == "manifest":
        assert found[1:] == ["provenance.json: manifest does not match manifest_sha256",
                             "provenance.json: release.seed 7 != manifest.seed 8"]


def test_member_count_disagrees_with_provenance(release):
    def edit(prov):
        prov["shards"][0]["count"] = 3

    rewrite_provenance(release, edit)
    shard = json.loads((release / "provenance.json").read_text())["shards"][0]["path"]
    assert problems(release) == [f"{shard}: 2 samples, provenance says 3",
                                 "provenance.json: shards hold 21 samples but 20 are ok"]


def test_tar_with_an_extra_member_is_caught_by_its_hash(release):
    tar_path = release / "data" / "contrast-1" / "test-00000.tar"
    extra = tmp = release / "x.json"
    tmp.write_text("{}")
    with tarfile.open(tar_path, "a") as tar:
        tar.add(extra, arcname="intruder-000000.json")
    extra.unlink()
    assert problems(release)[0].startswith("data/contrast-1/test-00000.tar: sha256 ")


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_samples_parquet_truncated_or_missing(release, damage):
    path = release / "samples.parquet"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.unlink()
    found = problems(release)
    assert len(found) == 1 and found[0].startswith(f"{path}: {'unreadable' if damage == 'truncate' else 'missing'}")


def shiftforge(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("content", ['{"schema": "shiftforge/provenance/1", "shards": [', "[1, 2]",
                                     '{"schema": "shiftforge/provenance/1"}'])
def test_invalid_provenance_is_one_line_and_exit_1(release, content):
    (release / "provenance.json").write_text(content)
    result = shiftforge("verify", str(release))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"MISMATCH {release / 'provenance.json'}: invalid (")


@pytest.mark.slow
def test_verify_never_aborts_at_exit(release):
    """Threads still running at interpreter exit (Arrow, zarr, fsspec pools) once made verify print OK and
    then abort with rc 134 in a few runs of a hundred."""
    script = ("import subprocess, sys\n"
              "from concurrent.futures import ThreadPoolExecutor\n"
              "def verify(_):\n"
              "    return subprocess.run([sys.executable, '-m', 'pipeline', 'verify', sys.argv[1]],"
              " capture_output=True).returncode\n"
              "with ThreadPoolExecutor(4) as pool:\n"
              "    print(' '.join(map(str, pool.map(verify, range(50)))))\n")
    result = subprocess.run([sys.executable, "-c", script, str(release)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split() == ["0"] * 50


def test_no_thread_outlives_verify(release):
    script = ("import sys, threading\n"
              "from pipeline.release.verify import stop_io_threads, verify_release\n"
              "assert verify_release(sys.argv[1]).ok\n"
              "stop_io_threads()\n"
              "print([t.name for t in threading.enumerate()])\n")
    result = subprocess.run([sys.executable, "-c", script, str(release)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "['MainThread']", result.stderr


def test_filtered_release_zarr_regions_are_checked(tmp_path):
    """A filtered release packs its shards anew; its tasks' Zarr regions are still verified."""
    from tests.conftest import TINY_RELEASE

    manifest = json.loads(json.dumps(TINY_RELEASE))
    manifest["filters"] = {"chain": [{"filter": "quality"}]}
    out = tmp_path / "filtered"
    build_release(parse_release(manifest), out, workers=1)
    prov = json.loads((out / "provenance.json").read_text())
    regions = [r for r in prov["zarr_regions"] if r["path"] == STORE]
    assert [(r["start"], r["stop"]) for r in regions] == [(0, 2), (2, 4), (4, 5)]
    assert all(s.get("zarr") is None for s in prov["shards"])     # final shards carry no region
    assert verify_release(out).problems == []
    images = zarr.open_group(str(out / STORE), mode="r+")["images"]
    images[4, 0, 0, 0] = (int(images[4, 0, 0, 0]) + 1) % 256
    found = verify_release(out).problems
    assert len(found) == 1 and found[0].startswith(f"{STORE} [4:5]: digest"), found


def test_report_keeps_the_sha256_of_every_shard_it_hashed(release):
    import hashlib

    prov = json.loads((release / "provenance.json").read_text())
    report = verify_release(release)
    assert report.hashes == {s["path"]: hashlib.sha256((release / s["path"]).read_bytes()).hexdigest()
                             for s in prov["shards"]}
    assert report.hashes == {s["path"]: s["sha256"] for s in prov["shards"]}   # publish reuses these
