"""One writer per release root: `build`, `regenerate` and `publish` take the same lock.

Local folders: an exclusive flock on `<root>/.shiftforge.lock`, released by the
kernel when the holder dies (even by SIGKILL); the file records who holds it.
Object stores (s3://, gs://, memory://, ...) have no flock: a lease object at the
same name records holder, host, pid and an expiry; a live holder renews it, and
a lease past its expiry (a killed holder) may be taken over. Object stores offer
no compare-and-swap, so the lease is written, then read back to confirm.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

RUN_LOCK = ".shiftforge.lock"
LEASE_SECONDS = 600.0
POLL_SECONDS = 0.5


class LockHeld(Exception):
    """Another writer holds the release; this run did not start."""


def holder_line(holder: str) -> str:
    return f"pid {os.getpid()} on host {socket.gethostname()}: {holder} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"


def _held_message(holder: str, lock: str) -> str:
    return (f"another run is in progress ({holder or 'holder unknown'}; lock {lock}); "
            "not starting (pass --wait SECONDS to wait for it)")


# locks this thread already holds through `release_lock`: a nested take (regenerate → publish) re-enters
_HELD: ContextVar[frozenset[str]] = ContextVar("shiftforge_release_locks", default=frozenset())


@contextmanager
def exclusive_lock(path: str | Path, holder: str = "run", wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive flock on `path`; wait up to `wait` seconds for another holder to finish.
    Inside `release_lock` of the same release (same thread) it re-enters instead."""
    path = Path(path)
    if str(path.absolute()) in _HELD.get():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise LockHeld(_held_message(handle.read().strip(), str(path))) from None
                time.sleep(POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(holder_line(holder) + "\n")
        handle.flush()
        yield
    finally:
        handle.close()   # closing the descriptor drops the flock


@contextmanager
def release_lock(out: str | Path, holder: str = "build", wait: float = 0.0,
                 lease_seconds: float = LEASE_SECONDS) -> Iterator[None]:
    """The writer lock of release root `out` (a folder or an fsspec URL)."""
    from pipeline.writers.files import ReleaseStore

    store = ReleaseStore(out)
    key = str(Path(store.root) / RUN_LOCK) if store.local else store.url(RUN_LOCK)
    if key in _HELD.get():
        yield                       # e.g. publish inside regenerate: this thread holds it already
        return
    with (exclusive_lock(key, holder, wait) if store.local else lease(store, holder, wait, lease_seconds)):
        token = _HELD.set(_HELD.get() | {key})
        try:
            yield
        finally:
            _HELD.reset(token)


@contextmanager
def lease(store, holder: str, wait: float, lease_seconds: float) -> Iterator[None]:
    """A lease object on an object store, renewed every third of its life while held."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + max(wait, 0.0)
    while not _try_lease(store, holder, token, lease_seconds):
        if time.monotonic() >= deadline:
            current = _read_lease(store) or {}
            raise LockHeld(_held_message(current.get("holder", ""), store.url(RUN_LOCK)))
        time.sleep(POLL_SECONDS)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, holder, token, lease_seconds, stop),
                               name="shiftforge-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if (_read_lease(store) or {}).get("token") == token:
            store.rm(RUN_LOCK)


def _read_lease(store) -> dict | None:
    try:
        return json.loads(store.read_text(RUN_LOCK))
    except (FileNotFoundError, ValueError):
        return None


def _write_lease(store, holder: str, token: str, lease_seconds: float) -> None:
    doc = {"holder": holder_line(holder), "token": token, "expires": time.time() + lease_seconds}
    store.write_atomic(RUN_LOCK, json.dumps(doc).encode())


def _try_lease(store, holder: str, token: str, lease_seconds: float) -> bool:
    current = _read_lease(store)
    if current is not None and current.get("token") != token and current.get("expires", 0) > time.time():
        return False
    _write_lease(store, holder, token, lease_seconds)
    return (_read_lease(store) or {}).get("token") == token


def _renew(store, holder: str, token: str, lease_seconds: float, stop: threading.Event) -> None:
    while not stop.wait(lease_seconds / 3):
        if (_read_lease(store) or {}).get("token") != token:
            return   # taken over after an expiry: the holder's writes are no longer protected
        _write_lease(store, holder, token, lease_seconds)
