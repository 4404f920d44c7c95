"""The conditions a publish runs under: the release lock, the upload path and HTTP timeouts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.hub.retry import PublishError, ReleaseRefused

TRANSFERS = ("auto", "xet", "lfs")
DEFAULT_TIMEOUT_S = 300.0           # per connect/read/write of one HTTP operation, not per upload
TIMEOUT_ENV = "SHIFTFORGE_HUB_TIMEOUT"


@contextmanager
def release_lock(release_dir: str | Path) -> Iterator[None]:
    """Hold the release's writer lock, so no shard is rewritten while it is being uploaded.
    Inside `regenerate --publish` the lock is already held by this thread and is re-entered."""
    from pipeline.core.lock import LockHeld
    from pipeline.core.lock import release_lock as writer_lock

    if not Path(release_dir).is_dir():
        yield
        return
    try:
        with writer_lock(release_dir, "publish"):
            yield
    except LockHeld as exc:
        raise PublishError(f"{exc} (publish waits for the release to be complete)") from None


@contextmanager
def transfer_path(choice: str) -> Iterator[str]:
    """Run with uploads through Xet or LFS and yield which one is used. "auto" is the client's
    default: Xet when hf_xet is installed and HF_HUB_DISABLE_XET is not set, else LFS."""
    from huggingface_hub import constants
    from huggingface_hub.utils._runtime import is_package_available, is_xet_available

    if choice not in TRANSFERS:
        raise ReleaseRefused(f"transfer must be one of {', '.join(TRANSFERS)}; got {choice!r}")
    if choice == "xet" and not is_package_available("hf_xet"):
        raise ReleaseRefused("transfer 'xet' needs the hf_xet package (pip install hf_xet); nothing uploaded")
    saved = constants.HF_HUB_DISABLE_XET
    if choice != "auto":
        constants.HF_HUB_DISABLE_XET = choice == "lfs"
    try:
        yield "xet" if is_xet_available() else "lfs"
    finally:
        constants.HF_HUB_DISABLE_XET = saved


def hub_timeout(seconds: float | None = None) -> float:
    """The HTTP timeout to use: the argument, else $SHIFTFORGE_HUB_TIMEOUT, else 300 s."""
    if seconds is None:
        try:
            seconds = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
        except ValueError:
            raise ReleaseRefused(f"{TIMEOUT_ENV} must be a number of seconds") from None
    if not seconds > 0:
        raise ReleaseRefused(f"the HTTP timeout must be a positive number of seconds; got {seconds}")
    return seconds


def use_finite_timeouts(seconds: float) -> bool:
    """Give huggingface_hub's shared HTTP client a finite timeout (its default is none, so a stalled
    connection would hang forever). A client factory the user installed is left alone."""
    try:
        from huggingface_hub.utils import _http, set_client_factory
        current = _http._GLOBAL_CLIENT_FACTORY
    except (ImportError, AttributeError):     # a client without a shared, configurable session
        return False
    ours = getattr(current, "shiftforge_timeout", None)
    if current is not _http.default_client_factory and ours is None:
        return False
    if ours == seconds:
        return True

    def factory() -> Any:
        client = _http.default_client_factory()
        client.timeout = type(client.timeout)(seconds, connect=min(seconds, 30.0))   # httpx(2).Timeout
        return client

    factory.shiftforge_timeout = seconds  # type: ignore[attr-defined]
    set_client_factory(factory)
    return True
