"""Publish errors and retrying Hub calls: what is transient and how long to wait.

`huggingface_hub` already retries single requests (5xx, 429, network errors),
but what survives its retries reaches publish in several shapes: an
`HfHubHTTPError` with the response, an LFS upload failure wrapped in a plain
`RuntimeError` (the HTTP error is its `__cause__`), an `hf_xet` failure raised
as `ConnectionError("... HTTP status server error (503 ...)")`, or an
`httpx2` transport error. The policy here looks through the whole cause chain,
retries what is transient at the level of a whole step (a commit batch with its
uploads), waits at least what a `Retry-After` header asks, and re-checks the
remote (`recover`) inside the same retry handling.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CONFLICT_STATUS = frozenset({409, 412})
DENIED_STATUS = frozenset({401, 403})
XET_STATUS = re.compile(r"HTTP status (?:client|server) error \((\d{3})")


class PublishError(Exception):
    """Publishing failed; nothing already committed is lost, rerunning resumes."""


class ReleaseRefused(PublishError):
    """The release folder or the request is not fit to publish; nothing was uploaded."""


class WriteDenied(PublishError):
    """The token may not write to (or cannot see) the repo."""


class RemoteChanged(PublishError):
    """The repo moved under us (HTTP 409/412 or a foreign commit); nothing was overwritten."""


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def http_status(exc: BaseException) -> int | None:
    """The first HTTP status found along the cause chain (response attribute or an hf_xet message)."""
    for error in causes(exc):
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        if match := XET_STATUS.search(str(error)):
            return int(match.group(1))
    return None


def retry_after(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """Seconds a `Retry-After` header along the cause chain asks for (delay-seconds or HTTP-date)."""
    for error in causes(exc):
        headers = getattr(getattr(error, "response", None), "headers", None)
        value = headers.get("Retry-After") if headers is not None else None
        if value is None:
            continue
        value = str(value).strip()
        if value.isdigit():
            return float(value)
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now())
        except (TypeError, ValueError):
            return None
    return None


def storage_refused(exc: BaseException) -> bool:
    """A 403 from an upload URL outside the Hub's API (a pre-signed storage URL that expired while
    queued): asking the Hub again hands out a fresh one, so it is transient, not a permission."""
    for error in causes(exc):
        response = getattr(error, "response", None)
        if getattr(response, "status_code", None) == 403:
            try:
                path = str(response.request.url.path)
            except (AttributeError, RuntimeError):
                return False
            return "/api/" not in path and ".git/info/lfs" not in path
    return False


def is_transient(exc: BaseException) -> bool:
    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_STATUS or storage_refused(exc)
    transport: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    for name in ("httpx2", "httpx"):             # whichever HTTP library the installed client uses
        try:
            transport += (__import__(name).TransportError,)
        except (ImportError, AttributeError):
            pass
    return any(isinstance(error, transport) for error in causes(exc))


@dataclass
class RetryPolicy:
    """Retry transient Hub failures with exponential backoff, never waiting less than Retry-After."""

    attempts: int = 5
    first_wait: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    max_wait: float = 900.0

    def wait(self, attempt: int, exc: BaseException) -> float:
        backoff = self.first_wait * 2 ** (attempt - 1)
        return min(self.max_wait, max(backoff, retry_after(exc) or 0.0))

    def run(self, call: Callable[[], Any], what: str, recover: Callable[[], Any] | None = None) -> Any:
        """`call()`, retried; after a failure `recover()` runs first and a non-None result ends the
        step (e.g. a commit whose response was lost but that did land). Errors in `recover` are
        handled like errors in `call`."""
        failed = False
        for attempt in range(1, self.attempts + 1):
            try:
                if failed and recover is not None and (result := recover()) is not None:
                    return result
                return call()
            except RemoteChanged:
                raise
            except Exception as exc:  # classify, then re-raise what is not transient
                status = http_status(exc)
                if status in CONFLICT_STATUS:
                    raise RemoteChanged(f"{what} refused: the repo changed since it was read (HTTP {status}); "
                                        "nothing was overwritten, rerun to re-plan") from exc
                if not is_transient(exc) or attempt == self.attempts:
                    if not hasattr(exc, "publish_step"):
                        exc.publish_step = what        # type: ignore[attr-defined] - named in the one-line error
                    raise
                wait = self.wait(attempt, exc)
                log.warning("%s failed (%s); retry %d/%d in %.1fs", what, status or type(exc).__name__,
                            attempt, self.attempts - 1, wait)
                self.sleep(wait)
                failed = True
        raise AssertionError("unreachable")
