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
# the repository first; the caller's path after it (a tool installed with --target stays importable)
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
STORE = "zarr/contrast-1.zarr"
PREBUILT = "SHIFTFORGE_TEST_PRISTINE_RELEASE"   # a folder holding build_pristine's release, to copy


def build_pristine(out: str | Path) -> None:
    from tests.conftest import TINY_RELEASE

    build_release(parse_release(json.loads(json.dumps(TINY_RELEASE))), out, workers=1)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("pristine")
    prebuilt = os.environ.get(PREBUILT)
    if prebuilt:            # scripts/mutation.py builds it once instead of once per mutant
        shutil.copytree(prebuilt, out, dirs_exist_ok=True)
    else:
        build_pristine(out)
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
                          timeout=120, env=CHILD_ENV)


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
                            text=True, timeout=600, env=CHILD_ENV)
    assert result.stdout.split() == ["0"] * 50


def test_no_thread_outlives_verify(release):
    script = ("import sys, threading\n"
              "from pipeline.release.verify import stop_io_threads, verify_release\n"
              "assert verify_release(sys.argv[1]).ok\n"
              "stop_io_threads()\n"
              "print([t.name for t in threading.enumerate()])\n")
    result = subprocess.run([sys.executable, "-c", script, str(release)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=CHILD_ENV)
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


def test_io_threads_stop_in_process_and_start_again(release):
    import threading

    from pipeline.release.verify import stop_io_threads

    def io_threads():
        return sorted(t.name for t in threading.enumerate() if t.name == "zarr_io" or t.name.startswith("asyncio_"))

    assert verify_release(release).ok and "zarr_io" in io_threads()
    stop_io_threads()
    assert io_threads() == []
    stop_io_threads()                                     # nothing left to stop: a no-op
    assert verify_release(release).ok and "zarr_io" in io_threads()
    stop_io_threads()
    assert io_threads() == []


@pytest.mark.parametrize("content, why", [
    (b'{"schema": "shiftforge/provenance/1", "shards": [', "Expecting value: line 1 column 50 (char 49)"),
    (b"", "Expecting value: line 1 column 1 (char 0)"),
    (b"[1, 2]", "not a provenance document"),
    (b"{}", "not a provenance document"),
    (b'{"schema": "shiftforge/provenance/1"}', "release: Field required"),
    (b"\xff\xfe", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
])
def test_invalid_provenance_says_why_in_one_line(release, content, why):
    (release / "provenance.json").write_bytes(content)
    report = verify_release(release)
    assert report.problems == [f"{release / 'provenance.json'}: invalid ({why})"]
    assert (report.shards, report.samples) == (0, 0)


def test_invalid_provenance_field_names_its_nested_location(release):
    prov = json.loads((release / "provenance.json").read_text())
    prov["shards"][1]["count"] = "two"
    (release / "provenance.json").write_text(json.dumps(prov))
    found = problems(release)
    assert len(found) == 1 and found[0].startswith(f"{release / 'provenance.json'}: invalid (shards.1.count: "), found


def test_missing_provenance_is_the_only_problem(release):
    (release / "provenance.json").unlink()
    report = verify_release(release)
    assert report.problems == [f"{release / 'provenance.json'}: missing (not a finished release?)"]
    assert (report.shards, report.samples, report.hashes) == (0, 0, {})


def test_pristine_report_counts_shards_and_samples(release):
    report = verify_release(release)
    assert (report.ok, report.shards, report.samples, len(report.hashes)) == (True, 12, 20, 12)


def test_provenance_without_its_document_digest(release):
    prov = json.loads((release / "provenance.json").read_text())
    del prov["document_sha256"]
    (release / "provenance.json").write_text(json.dumps(prov))
    assert problems(release) == ["provenance.json: no document_sha256 (written by an older shiftforge; "
                                 "rebuild to add it)"]


@pytest.mark.parametrize("field, value", [("name", "other"), ("version", "9.9.9"), ("license", "cc0-1.0"),
                                          ("description", "edited"), ("seed", 8)])
def test_release_block_disagrees_with_its_manifest(release, field, value):
    prov = json.loads((release / "provenance.json").read_text())
    rewrite_provenance(release, lambda prov: prov["release"].update({field: value}))
    assert problems(release) == [f"provenance.json: release.{field} {value!r} != manifest.{field} "
                                 f"{prov['manifest'].get(field)!r}"]


def test_samples_parquet_says_why_it_is_unreadable(release):
    path = release / "samples.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["shard"]), path)
    assert problems(release) == [f"{path}: unreadable (ArrowInvalid: No match for FieldRef.Name(shard) in key: string)"]
    path.write_bytes(b"PAR1" + b"\0" * 100)
    assert problems(release) == [f"{path}: unreadable (ArrowInvalid: Could not open Parquet input source '<Buffer>': "
                                 "Parquet magic bytes not found in footer. Either the file is corrupted or this is "
                                 "not a parquet file.)"]


def test_counts_that_do_not_add_up(release):
    rewrite_provenance(release, lambda prov: prov["counts"].update(total=21))
    assert problems(release) == [
        "provenance.json: counts do not add up: {'error': 0, 'ok': 20, 'rejected': 0, 'total': 21}",
        "samples.parquet: 20 rows, provenance total is 21"]


def test_stray_file_in_a_folder_under_a_config(release):
    (release / "data" / "contrast-1" / "sub").mkdir()
    shutil.copy(release / "data" / "contrast-1" / "test-00000.tar", release / "data" / "contrast-1" / "sub" / "x.tar")
    assert problems(release) == ["data/contrast-1/sub/x.tar: stray file (not a shard listed in provenance)"]


def test_stray_and_unreadable_zarr_stores(release):
    shutil.copytree(release / STORE, release / "zarr" / "extra.zarr")
    shutil.rmtree(release / STORE / "valid")
    assert problems(release) == ["zarr/extra.zarr: stray (not a Zarr store listed in provenance)",
                                 f"{STORE}: unreadable Zarr store (KeyError: 'valid')"]


def test_missing_and_unreadable_shards(release):
    prov = json.loads((release / "provenance.json").read_text())
    first, second = prov["shards"][0]["path"], prov["shards"][1]["path"]
    (release / first).unlink()
    (release / second).write_bytes(b"not a tar" * 100)
    import hashlib

    digest = hashlib.sha256((release / second).read_bytes()).hexdigest()
    rewrite_provenance(release, lambda prov: prov["shards"][1].update(sha256=digest))
    report = verify_release(release)
    assert report.problems[0] == f"{first}: missing"
    assert report.problems[1].startswith(f"{second}: not a readable tar (") and len(report.problems) == 2
    assert (report.shards, report.samples) == (12, 16)         # the two shards held 2 samples each


def edited_row(release, **change):
    def edit(rows):
        rows[0].update(change)

    edit_rows(release, edit)
    return pq.read_table(release / "samples.parquet").to_pylist()[0]


def test_row_pointing_at_an_unlisted_shard(release):
    row = edited_row(release, shard="data/x.tar")
    assert problems(release)[1:] == [f"samples.parquet: 1 row(s) point at a shard provenance does not list, "
                                     f"e.g. {row['key']}"]


def test_ok_row_without_a_shard(release):
    row = edited_row(release, shard=None)
    assert problems(release)[1:] == [f"samples.parquet: 1 ok row(s) without a shard, e.g. {row['key']}"]


def test_rows_of_an_unknown_config(release):
    row = edited_row(release, config="fog-3")
    assert problems(release) == [
        f"zarr/gaussian_noise-1.zarr: slot 0 key '{row['key']}' has no row in samples.parquet",
        "samples.parquet: 4 ok rows for gaussian_noise-1, provenance says 5",
        "samples.parquet: rows of config(s) provenance does not have: fog-3"]


def test_short_exception_text():
    from pipeline.release.verify_zarr import _short

    assert _short(KeyError()) == "KeyError: "
    assert _short(ValueError("")) == "ValueError: "
    assert _short(OSError("first line\nsecond line")) == "OSError: first line"
    long = _short(RuntimeError("x" * 300))
    assert len(long) == 200 and long == "RuntimeError: " + "x" * 186


def test_zarr_regions_listed_apart_are_checked(release):
    """A filtered release lists its tasks' regions under zarr_regions, its shards carry none."""
    def move_regions(prov):
        prov["zarr_regions"] = [s["zarr"] for s in prov["shards"]]
        for shard in prov["shards"]:
            shard["zarr"] = None

    rewrite_provenance(release, move_regions)
    assert problems(release) == []
    images = zarr.open_group(str(release / STORE), mode="r+")["images"]
    images[4, 0, 0, 0] = (int(images[4, 0, 0, 0]) + 1) % 256
    found = problems(release)
    assert len(found) == 1 and found[0].startswith(f"{STORE} [4:5]: digest"), found


def test_problems_are_one_line_each():
    from pipeline.release.verify import VerifyReport

    report = VerifyReport()
    report.add("a\nb\nc")
    assert report.problems == ["a b c"] and not report.ok


def test_config_counts_without_a_status_count_as_zero(release):
    def drop(prov):
        counts = prov["configs"]["contrast-1"]["counts"]
        del counts["error"], counts["rejected"]

    rewrite_provenance(release, drop)
    assert problems(release) == []

    def edit(rows):
        next(r for r in rows if r["key"] == "chelsea-000004" and r["config"] == "contrast-1")["status"] = "rejected"

    edit_rows(release, edit)
    found = problems(release)
    assert "samples.parquet: 1 rejected rows for contrast-1, provenance says 0" in found
    assert "samples.parquet: 4 ok rows for contrast-1, provenance says 5" in found


def test_rows_of_two_unknown_configs_are_listed(release):
    def edit(rows):
        rows[0]["config"], rows[1]["config"] = "snow-1", "fog-3"

    edit_rows(release, edit)
    assert "samples.parquet: rows of config(s) provenance does not have: fog-3, snow-1" in problems(release)


def test_valid_mask_empty_slots(tmp_path):
    """An empty slot must not be valid, and does not end the scan of the slots after it."""
    layout = ZarrLayout(path=str(tmp_path / "zarr" / "c.zarr"), length=3, shard_len=1, height=8, width=8, channels=3)
    ensure_store(layout, {})
    write_region(layout, 1, [("a", 0, np.full((8, 8, 3), 7, np.uint8))])      # slot 0 stays empty
    write_region(layout, 2, [("c", 2, None)])
    prov = {"zarr": ["zarr/c.zarr"], "shards": []}
    rows = [{"config": "c", "key": "a", "status": "ok"}, {"config": "c", "key": "c", "status": "rejected"}]

    class Report(list):
        add = list.append

    group = zarr.open_group(layout.path, mode="r+")
    assert group["keys"][:].tolist() == ["", "a", "c"]
    group["valid"][2] = True
    found = Report()
    check_zarr(ReleaseStore(tmp_path), prov, rows, found)
    assert found == ["zarr/c.zarr: slot 2 (c) valid=True but its row's status is 'rejected'"]
    group["valid"][2], group["valid"][0] = False, True
    found.clear()
    check_zarr(ReleaseStore(tmp_path), prov, rows, found)
    assert found == ["zarr/c.zarr: slot 0 has no key but valid is true"]


def test_valid_mask_unreadable_or_of_another_length():
    from pipeline.release.verify_zarr import _check_valid_mask

    class Broken:
        def __getitem__(self, item):
            raise ValueError("bad chunk")

    found: list[str] = []
    _check_valid_mask("zarr/c.zarr", {"keys": Broken(), "valid": np.ones(2, bool)}, {}, type("R", (), {
        "add": staticmethod(found.append)})())
    assert found == ["zarr/c.zarr: unreadable keys/valid (ValueError: bad chunk)"]
    with pytest.raises(ValueError, match="zip"):          # never silently checks fewer slots than it holds
        _check_valid_mask("zarr/c.zarr", {"keys": np.array(["a", "b", "c"]), "valid": np.ones(2, bool)},
                          {"a": "ok", "b": "ok", "c": "ok"}, type("R", (), {"add": staticmethod(found.append)})())


def test_a_shard_whose_rows_were_all_moved_away_is_still_compared(release):
    """A listed shard with no ok row left in samples.parquet: every key it holds is reported."""
    shard = "data/contrast-5/test-00001.tar"
    moved = []

    def edit(rows):
        for row in rows:
            if row["shard"] == shard:
                row["shard"] = "data/contrast-5/test-00000.tar"
                moved.append(row["key"])

    edit_rows(release, edit)
    assert moved
    assert f"{shard}: holds {len(moved)} key(s) samples.parquet does not place here ({sorted(moved)[0]}, …) " \
           f"and lacks 0 it does" in problems(release)


def test_a_zarr_store_whose_config_lost_every_row(release):
    def edit(rows):
        rows[:] = [r for r in rows if r["config"] != "gaussian_noise-1"]

    edit_rows(release, edit)
    found = problems(release)
    assert any(p.startswith("zarr/gaussian_noise-1.zarr: slot 0 key '") and p.endswith(
        "' has no row in samples.parquet") for p in found)
