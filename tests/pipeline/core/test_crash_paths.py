"""What a crash leaves behind: never a truncated file under a final name, and a
journal whose torn last line is skipped, repaired and resumed from."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import pytest

from pipeline.core.journal import JOURNAL_NAME, JournalWriter, read_journal
from pipeline.core.records import ShardRecord
from pipeline.release.verify import verify_release
from pipeline.writers.files import atomic_open, remove_temporaries
from pipeline.writers.webdataset import write_tar
from tests.pipeline.release_fixtures import build_tiny_release, write_manifest

ROOT = Path(__file__).resolve().parents[3]
LOCAL = fsspec.filesystem("file")


def record(i: int) -> ShardRecord:
    return ShardRecord(shard_id=f"c/test-{i:05d}", config="c", fingerprint=f"{i:064x}",
                       path=f"data/c/test-{i:05d}.tar", sha256=f"{i + 1:064x}", bytes=10 * i, count=i,
                       first_key="a", last_key="b", counts={"total": i, "ok": i, "rejected": 0, "error": 0},
                       seconds=0.5, rows=[{"key": "a", "status": "ok", "reason": ""}])


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so no `except Exception` handler catches it."""


def test_a_write_interrupted_midway_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "shard.tar"
    target.write_bytes(b"previous shard")
    with pytest.raises(Killed), atomic_open(LOCAL, str(target)) as handle:
        handle.write(b"half of a new sh")
        assert target.read_bytes() == b"previous shard"        # nothing under the final name yet
        raise Killed
    assert target.read_bytes() == b"previous shard"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.tar"]


def test_write_tar_never_exposes_a_partial_tar_under_its_final_name(tmp_path, monkeypatch):
    """Interrupt write_tar inside its write: the final path must not exist."""
    import fsspec.implementations.local as local

    real_write = local.LocalFileOpener.write

    def write_half_then_die(self, data):
        real_write(self, bytes(data)[: len(data) // 2])
        raise Killed

    monkeypatch.setattr(local.LocalFileOpener, "write", write_half_then_die)
    target = tmp_path / "data" / "c" / "test-00000.tar"
    with pytest.raises(Killed):
        write_tar(LOCAL, str(target), [("k", {"png": b"x" * 4096, "json": b"{}"})])
    assert not target.exists()


def test_remove_temporaries_deletes_only_leftovers(tmp_path):
    (tmp_path / "data" / "c").mkdir(parents=True)
    (tmp_path / "data" / "c" / "test-00000.tar").write_bytes(b"done")
    (tmp_path / "data" / "c" / "test-00001.tar.tmp-1a2b3c4d").write_bytes(b"torn")
    assert remove_temporaries(LOCAL, str(tmp_path)) == 1
    assert sorted(p.name for p in (tmp_path / "data" / "c").iterdir()) == ["test-00000.tar"]


def test_read_journal_skips_a_last_line_torn_at_any_byte(tmp_path):
    writer = JournalWriter(tmp_path)
    for i in (1, 2, 3):
        writer.append(record(i))
    text = (tmp_path / JOURNAL_NAME).read_bytes()
    last_start = text.rindex(b"\n", 0, len(text) - 1) + 1
    for cut in range(last_start, len(text) - 1):     # every torn length of the third line
        (tmp_path / JOURNAL_NAME).write_bytes(text[:cut])
        assert sorted(read_journal(tmp_path)) == ["c/test-00001", "c/test-00002"], cut
    (tmp_path / JOURNAL_NAME).write_bytes(text)
    assert read_journal(tmp_path)["c/test-00003"] == record(3)


def test_a_torn_line_that_is_json_but_not_a_record_is_skipped(tmp_path):
    JournalWriter(tmp_path).append(record(1))
    with open(tmp_path / JOURNAL_NAME, "a") as handle:
        handle.write('{"shard_id": "c/test-00009"}\n')
    assert list(read_journal(tmp_path)) == ["c/test-00001"]


def test_appending_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    writer = JournalWriter(tmp_path)
    writer.append(record(1))
    writer.append(record(2))
    text = (tmp_path / JOURNAL_NAME).read_bytes()
    (tmp_path / JOURNAL_NAME).write_bytes(text[:-20])
    JournalWriter(tmp_path).append(record(3))
    journal = read_journal(tmp_path)
    assert sorted(journal) == ["c/test-00001", "c/test-00003"]
    assert journal["c/test-00003"] == record(3)
    lines = (tmp_path / JOURNAL_NAME).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["shard_id"] == "c/test-00003"


def test_the_latest_record_of_a_shard_wins(tmp_path):
    writer = JournalWriter(tmp_path)
    writer.append(record(1))
    newer = ShardRecord(**{**record(1).to_json(), "sha256": "f" * 64})
    writer.append(newer)
    assert read_journal(tmp_path) == {"c/test-00001": newer}


# --- a real SIGKILL while a shard's bytes are being written ---------------------------------------

DRIVER = """
import sys, time
import fsspec.implementations.local as local
from dask.distributed import LocalCluster
from pipeline.core.build import build_release

real_write = local.LocalFileOpener.write

def write_half_and_hang(self, data):
    # the first shard write: half its bytes reach the disk, then the process hangs until killed
    if ".tar" in self.path and len(data) > 1000:
        real_write(self, bytes(data)[: len(data) // 2])
        self.flush()
        open(sys.argv[3], "w").close()
        time.sleep(600)
    return real_write(self, data)

local.LocalFileOpener.write = write_half_and_hang
with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
    build_release(sys.argv[1], sys.argv[2], scheduler=cluster.scheduler_address)
"""


def _tar_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "data").glob("*/*.tar"))}


@pytest.mark.slow
def test_sigkill_inside_a_shard_write_leaves_no_shard_and_the_rerun_completes(tmp_path):
    reference = build_tiny_release(tmp_path / "reference")
    manifest = write_manifest(tmp_path / "tiny.yaml")
    out, marker = tmp_path / "killed", tmp_path / "writing"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(driver), str(manifest), str(out), str(marker)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the driver never reached a shard write"

    partial = list(out.rglob("*.tar.tmp-*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0      # half a shard, under a temporary name
    assert _tar_hashes(out) == {}                                    # and nothing under a final name
    assert read_journal(out) == {}

    rerun = subprocess.run([sys.executable, "-m", "pipeline", "build", str(manifest), "--out", str(out),
                            "--workers", "1", "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _tar_hashes(out) == _tar_hashes(reference) and len(_tar_hashes(out)) == 8   # 2 shards × 4 configs
    assert not list(out.rglob("*.tmp-*"))
    assert verify_release(out).ok



def test_a_release_folder_without_a_journal_reads_as_empty(tmp_path):
    from pipeline.writers.files import ReleaseStore

    assert read_journal(tmp_path) == {}
    assert read_journal(ReleaseStore(tmp_path)) == {}
    (tmp_path / JOURNAL_NAME).write_bytes(b"")                 # created, killed before the first line
    writer = JournalWriter(ReleaseStore(tmp_path))
    writer.append(record(1))
    assert (tmp_path / JOURNAL_NAME).read_text().count("\n") == 1
    assert read_journal(ReleaseStore(tmp_path)) == {"c/test-00001": record(1)}


def test_journal_lines_are_canonical_json_and_reopening_adds_no_blank_line(tmp_path):
    JournalWriter(tmp_path).append(record(1))
    JournalWriter(tmp_path).append(record(2))                  # reopened on an intact journal
    lines = (tmp_path / JOURNAL_NAME).read_text().split("\n")
    assert lines[2] == "" and len(lines) == 3
    assert lines[0] == json.dumps(record(1).to_json(), sort_keys=True)
    assert list(json.loads(lines[1])) == sorted(record(2).to_json())


def test_compact_rewrites_the_journal_with_exactly_the_given_records(tmp_path):
    writer = JournalWriter(tmp_path)
    for i in (1, 2, 3):
        writer.append(record(i))
    writer.compact([record(3), record(1)])
    lines = (tmp_path / JOURNAL_NAME).read_text().splitlines()
    assert [json.loads(line)["shard_id"] for line in lines] == ["c/test-00003", "c/test-00001"]
    assert read_journal(tmp_path) == {"c/test-00001": record(1), "c/test-00003": record(3)}
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL_NAME]
