"""Cluster arguments, the workers' probe of the release root, and a remote cluster with a relative --out."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import engine
from pipeline.build import absolute_out, check_out
from pipeline.cli import UsageError
from pipeline.engine import ClusterError, check_cluster_args, dask_client

ROOT = Path(__file__).resolve().parents[2]
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
