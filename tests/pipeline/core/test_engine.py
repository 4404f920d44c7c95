"""Cluster arguments, the workers' probe of the release root, and a remote cluster with a relative --out."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core import engine
from pipeline.core.build import absolute_out, check_out
from pipeline.core.engine import ClusterError, check_cluster_args, dask_client
from stages.base import UsageError

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("workers, scheduler, message", [
    (0, None, "--workers must be between 1 and 4096 (got 0)"),
    (-1, None, "--workers must be between 1 and 4096 (got -1)"),
    (None, "not a url", "--scheduler 'not a url' is not a scheduler address"),
    (None, "http://10.0.0.5:8786/x", "is not a scheduler address"),
])
def test_bad_cluster_arguments(workers, scheduler, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_cluster_args(workers, scheduler)


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "10.0.0.5:8786", "tls://sched.example.org:8786",
                                     "tcp://[::1]:8786"])
def test_good_scheduler_addresses(address):
    check_cluster_args(4, address)


def test_unreachable_scheduler_is_one_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(engine, "CONNECT_TIMEOUT_S", 1)
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 1s"):
        with dask_client(scheduler="tcp://127.0.0.1:9"):
            pass
    assert time.monotonic() - started < 10


def test_local_out_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_out("rel") == tmp_path / "rel"
    assert absolute_out(f"file://{tmp_path}/x") == tmp_path / "x"
    assert absolute_out("memory://bucket/rel") == "memory://bucket/rel"


@pytest.mark.parametrize("kind", ["file", "under-file", "proc"])
def test_unusable_out(tmp_path, kind):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under-file": tmp_path / "f" / "sub", "proc": Path("/proc/self/rel")}[kind]
    with pytest.raises(UsageError, match={"file": "is a file", "under-file": "which is a file",
                                          "proc": "virtual filesystem"}[kind]):
        check_out(out)


def test_workers_that_cannot_see_the_release_stop_the_build(tiny_release, write_manifest, capsys):
    """memory:// lives in one process: LocalCluster's worker processes write where the driver never reads."""
    from pipeline.cli import main

    assert main(["build", str(write_manifest(tiny_release)), "--out", "memory://shiftforge-probe/rel",
                 "--workers", "1", "--no-progress"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: workers cannot see memory://shiftforge-probe/rel \(1 of 1, e\.g\. tcp://\S+\): "
                        r"use a folder shared by all machines or an object-store URL", last), last
    import fsspec

    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find("/shiftforge-probe") if ".probe-" in p]
    fs.rm("/shiftforge-probe", recursive=True)


def _dask(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_remote_cluster_with_a_relative_out(tmp_path, tiny_release, write_manifest):
    """The worker runs in another folder: a relative --out must still land in the driver's folder."""
    manifest = write_manifest(tiny_release)
    workdir, driver = tmp_path / "wd", tmp_path / "drv"
    workdir.mkdir()
    driver.mkdir()
    scheduler_file = tmp_path / "scheduler.json"
    procs = [_dask("distributed.cli.dask_scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
                   "--no-dashboard", cwd=workdir)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(_dask("distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                           "--nworkers", "1", "--nthreads", "1", "--no-dashboard", cwd=workdir))
        time.sleep(3)
        result = subprocess.run([sys.executable, "-m", "pipeline", "build", str(manifest), "--out", "rel",
                                 "--scheduler", address, "--no-progress"], cwd=driver, env=ENV,
                                capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr
        assert "built 12 shards" in result.stderr
        assert len(list((driver / "rel" / "data").glob("*/*.tar"))) == 12
        assert not (workdir / "rel").exists()
        verify = subprocess.run([sys.executable, "-m", "pipeline", "verify", "rel"], cwd=driver, env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0 and verify.stdout.startswith("OK: 12 shards, 20 samples")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


# -- affinity: variants of one slice that share work run on one worker -----------------------------

class _Unit:
    def __init__(self, shard_id: str, affinity: str | None):
        self.shard_id, self.affinity, self.fingerprint = shard_id, affinity, f"{abs(hash(shard_id)):020d}"


def _where(shard_id: str) -> tuple[str, str]:
    from distributed import get_worker

    return shard_id, get_worker().address


def test_order_by_affinity_interleaves_one_group_per_worker():
    units = [_Unit(f"{shift}/{s}", f"0:{s}") for shift in "abc" for s in range(3)] + [_Unit("x", None)]
    order = [u.shard_id for u in engine.order_by_affinity(units, lanes=2)]
    # slices 0 and 1 side by side (one per worker), then slice 2 beside the unit without a group
    assert order == ["a/0", "a/1", "b/0", "b/1", "c/0", "c/1", "a/2", "x", "b/2", "c/2"]
    plain = [_Unit(str(i), None) for i in range(5)]
    assert engine.order_by_affinity(plain, lanes=3) == plain


def test_affinity_worker_deals_groups_round_robin_over_able_workers():
    workers = {"tcp://b": {"resources": {"GPU": 1}}, "tcp://a": {"resources": {}}, "tcp://c": {"resources": {"GPU": 2}}}
    placed: dict[str, str] = {}
    assert engine.affinity_worker(None, {}, workers, placed) is None
    assert [engine.affinity_worker(g, {}, workers, placed) for g in ("g0", "g1", "g2", "g3", "g0")] == [
        ["tcp://a"], ["tcp://b"], ["tcp://c"], ["tcp://a"], ["tcp://a"]]
    gpu: dict[str, str] = {}
    assert [engine.affinity_worker(g, {"GPU": 1}, workers, gpu) for g in ("g0", "g1", "g2")] == [
        ["tcp://b"], ["tcp://c"], ["tcp://b"]]
    assert engine.affinity_worker("g", {"TPU": 1}, workers, {}) is None


@pytest.mark.slow
def test_units_of_one_group_run_on_one_worker():
    units = [_Unit(f"{shift}/{s}", f"0:{s}") for shift in "abcd" for s in range(4)]
    ran: list[tuple[str, str]] = []
    with dask_client(workers=2) as client:
        engine.run_units(client, units, _where, args_for=lambda u: (u.shard_id,), resources_for=lambda u: {},
                         on_done=ran.append)
    by_slice: dict[str, set[str]] = {}
    for shard_id, address in ran:
        by_slice.setdefault(shard_id.split("/")[1], set()).add(address)
    assert sorted(by_slice) == ["0", "1", "2", "3"] and all(len(w) == 1 for w in by_slice.values())
    assert len(set().union(*by_slice.values())) == 2       # both workers were used
