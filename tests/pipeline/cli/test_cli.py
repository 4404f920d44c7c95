"""The CLI end to end in subprocesses: exit codes, a real Dask cluster, verify, preview."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]


def shiftforge(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_every_command():
    result = shiftforge("--help")
    assert result.returncode == 0
    for command in ("build", "plan", "verify", "preview", "schema", "export", "publish", "regenerate",
                    "schedule", "calibrate", "report", "metashift", "train-slider"):
        assert command in result.stdout, command


def test_bad_manifest_exits_2_and_writes_nothing(tmp_path, tiny_release, write_manifest):
    tiny_release["shifts"][0]["severities"] = [0]
    out = tmp_path / "out"
    result = shiftforge("build", str(write_manifest(tiny_release)), "--out", str(out))
    assert result.returncode == 2
    assert "shifts.0.corruptions.severities.0" in result.stderr
    assert not out.exists()


def test_plan_prints_the_work(tiny_release, write_manifest):
    result = shiftforge("plan", str(write_manifest(tiny_release)))
    assert result.returncode == 0, result.stderr
    assert "5 source items (samples), 4 configs, 12 shards" in result.stdout


def test_build_verify_preview_with_a_bad_file(tmp_path, write_manifest):
    images = tmp_path / "images" / "cats"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / f"cat {i}.v1.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    manifest = write_manifest({
        "name": "cli", "version": "1.0.0", "source": {"kind": "folder", "path": str(tmp_path / "images")},
        "shifts": [{"stage": "corruptions", "corruptions": ["pixelate"], "severities": [2]}],
        "output": {"samples_per_shard": 2}})
    out = tmp_path / "release"
    result = shiftforge("build", str(manifest), "--out", str(out), "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "4 samples: 3 ok, 0 rejected, 1 errors" in " ".join(result.stderr.split())
    assert shiftforge("build", str(manifest), "--out", str(out), "--workers", "1", "--strict",
                      "--no-progress").returncode == 1
    assert shiftforge("verify", str(out)).returncode == 0
    preview = tmp_path / "preview.png"
    assert shiftforge("preview", str(out), "--out", str(preview)).returncode == 0
    sheet = np.asarray(Image.open(preview))
    assert sheet.shape[0] > 3 * 100 and sheet.std() > 10  # three rows of real pixels

    shard = next((out / "data").glob("*/*.tar"))
    data = bytearray(shard.read_bytes())
    data[600] ^= 1
    shard.write_bytes(bytes(data))
    result = shiftforge("verify", str(out))
    assert result.returncode == 1 and "MISMATCH" in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on loopback."""
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)]
    for name in ("w1", "w2"):
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--name", name,
                                       "--resources", "GPU=1" if name == "w2" else "CPU=1"],
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)}))
    try:
        from dask.distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def test_build_on_an_existing_cluster_matches_local(dask_cluster, tmp_path, tiny_release, write_manifest):
    manifest = write_manifest(tiny_release)
    remote, local = tmp_path / "remote", tmp_path / "local"
    result = shiftforge("build", str(manifest), "--out", str(remote), "--scheduler", dask_cluster, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert shiftforge("build", str(manifest), "--out", str(local), "--workers", "1",
                      "--no-progress").returncode == 0
    remote_prov = json.loads((remote / "provenance.json").read_text())
    local_prov = json.loads((local / "provenance.json").read_text())
    assert [s["sha256"] for s in remote_prov["shards"]] == [s["sha256"] for s in local_prov["shards"]]
    assert remote_prov["counts"]["ok"] == 20
