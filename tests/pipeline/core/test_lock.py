"""One writer per release root: a flock on local folders, a lease object on object stores."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest

from pipeline.core.build import build_release
from pipeline.core.lock import RUN_LOCK, LockHeld, exclusive_lock, release_lock
from pipeline.core.manifest import parse_release
from pipeline.writers.files import ReleaseStore

ROOT = Path(__file__).resolve().parents[3]


def take_elsewhere(root, holder: str, **kwargs) -> LockHeld | None:
    """Try the release lock from another thread (this one may hold it, and would re-enter)."""
    outcome: list = []

    def take():
        try:
            with release_lock(root, holder, **kwargs):
                outcome.append(None)
        except LockHeld as exc:
            outcome.append(exc)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return outcome[0]


def test_regenerate_names_stay_importable():
    from pipeline.hub import regenerate

    assert (regenerate.RUN_LOCK, regenerate.LockHeld, regenerate.exclusive_lock) == (
        RUN_LOCK, LockHeld, exclusive_lock)


def test_local_lock_records_holder_and_refuses_a_second_writer(tmp_path):
    with release_lock(tmp_path, "build"):
        text = (tmp_path / RUN_LOCK).read_text()
        assert text.startswith(f"pid {os.getpid()} on host {socket.gethostname()}: build since ")
        lock = tmp_path / RUN_LOCK
        held = rf"another run is in progress \(pid {os.getpid()} on host .*: build since .*; lock {lock}\)"
        assert re.fullmatch(rf"{held}; not starting \(pass --wait SECONDS to wait for it\)",
                            str(take_elsewhere(tmp_path, "regenerate")))
    with release_lock(tmp_path, "regenerate"):   # released on exit
        pass


def test_build_refuses_while_another_writer_holds_the_release(tmp_path, tiny_release):
    with exclusive_lock(tmp_path / RUN_LOCK, "regenerate"):
        with pytest.raises(LockHeld, match="another run is in progress .*: regenerate since "):
            build_release(parse_release(tiny_release), tmp_path, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_LOCK]


def test_wait_takes_the_lock_once_the_holder_is_done(tmp_path):
    acquired = threading.Event()
    done = threading.Event()

    def hold():
        with release_lock(tmp_path, "build"):
            acquired.set()
            done.wait(5)
            time.sleep(0.6)

    holder = threading.Thread(target=hold)
    holder.start()
    acquired.wait(5)
    done.set()
    started = time.monotonic()
    with pytest.raises(LockHeld):
        with release_lock(tmp_path, "second", wait=0):
            pass
    with release_lock(tmp_path, "second", wait=10):
        waited = time.monotonic() - started
    holder.join()
    assert 0.3 < waited < 5


def test_a_killed_holder_releases_the_lock(tmp_path):
    script = ("import sys, time\nfrom pipeline.core.lock import release_lock\n"
              "with release_lock(sys.argv[1], 'build'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {child.pid}"):
            with release_lock(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()
    with release_lock(tmp_path):
        pass


@pytest.fixture
def memory_root():
    url = "memory://shiftforge-lock-test/release"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists("/shiftforge-lock-test"):
        fs.rm("/shiftforge-lock-test", recursive=True)


def test_object_store_lease(memory_root):
    store = ReleaseStore(memory_root)
    with release_lock(memory_root, "build", lease_seconds=60):
        lease = json.loads(store.read_text(RUN_LOCK))
        assert lease["holder"].startswith(f"pid {os.getpid()} on host {socket.gethostname()}: build since ")
        assert 55 < lease["expires"] - time.time() <= 60
        assert re.match(r"another run is in progress \(pid .*: build since .*; lock memory://",
                        str(take_elsewhere(memory_root, "regenerate")))
    assert not store.exists(RUN_LOCK)


def test_an_expired_lease_is_taken_over_and_a_live_one_renewed(memory_root, monkeypatch):
    store = ReleaseStore(memory_root)
    store.write_atomic(RUN_LOCK, json.dumps({"holder": "dead", "token": "x", "expires": time.time() - 1}).encode())
    with release_lock(memory_root, "build", lease_seconds=0.6):
        first = json.loads(store.read_text(RUN_LOCK))
        assert first["token"] != "x"
        time.sleep(0.5)
        renewed = json.loads(store.read_text(RUN_LOCK))
        assert renewed["token"] == first["token"] and renewed["expires"] > first["expires"]
    assert not store.exists(RUN_LOCK)


@pytest.mark.slow
def test_cli_build_while_locked_is_one_line_and_wait_succeeds(tmp_path, tiny_release, write_manifest):
    manifest = write_manifest(tiny_release)
    out = tmp_path / "release"
    command = [sys.executable, "-m", "pipeline", "build", str(manifest), "--out", str(out), "--workers", "1",
               "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with exclusive_lock(out / RUN_LOCK, "publish"):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert f"another run is in progress (pid {os.getpid()} on host" in result.stderr
        assert ": publish since" in result.stderr and "--wait" in result.stderr
        waiting = subprocess.Popen([*command, "--wait", "60"], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(1.5)
        assert waiting.poll() is None
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert (out / "provenance.json").exists()


def test_a_nested_take_in_the_same_thread_re_enters(tmp_path):
    """regenerate holds the release and then publishes, which takes the same lock."""
    with release_lock(tmp_path, "regenerate"):
        with exclusive_lock(tmp_path / RUN_LOCK, "publish"), release_lock(tmp_path, "publish"):
            assert "regenerate since" in (tmp_path / RUN_LOCK).read_text()
        assert isinstance(take_elsewhere(tmp_path, "build"), LockHeld)
    with exclusive_lock(tmp_path / RUN_LOCK), pytest.raises(LockHeld):   # a plain holder is not re-entered
        with release_lock(tmp_path):
            pass
