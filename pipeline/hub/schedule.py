"""`schedule`: run regenerate at the times a cron expression names, in the foreground.

One scheduler per release folder (a lock held for the loop's lifetime) and one
run at a time (regenerate's own lock, which also keeps a cron- or CI-started
`regenerate` from overlapping a scheduled one). A run that fails is logged and
the loop goes on; a run that outlasts its slot skips the missed slots instead
of firing them back to back.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from croniter import croniter

from pipeline.hub.regenerate import LockHeld, exclusive_lock
from stages.base import UsageError

SCHEDULER_LOCK = ".schedule.lock"


def check_cron(expression: str) -> None:
    if not croniter.is_valid(expression):
        raise UsageError(f"--cron: {expression!r} is not a cron expression (expected 5 fields, "
                         "e.g. '0 3 * * 1' for Mondays at 03:00)")


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after `after` that the cron expression names."""
    return croniter(expression, after).get_next(datetime)


def _print_line(line: str) -> None:
    print(line, flush=True)


def run_schedule(run: Callable[[], Any], out: str | Path, cron: str, *, max_runs: int | None = None,
                 now: Callable[[], datetime] = datetime.now, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] = _print_line) -> list[str]:
    """Call `run()` (returning an object with `summary()`) at each cron time; returns the run log lines.

    Raises LockHeld at once when another scheduler already serves `out`.
    """
    check_cron(cron)
    lines: list[str] = []
    with exclusive_lock(Path(out) / SCHEDULER_LOCK):
        runs = 0
        while max_runs is None or runs < max_runs:
            due = next_run(cron, now())
            log(f"{now():%Y-%m-%dT%H:%M:%S} next run at {due:%Y-%m-%dT%H:%M:%S}")
            wait = (due - now()).total_seconds()
            if wait > 0:
                sleep(wait)
            runs += 1
            line = f"{now():%Y-%m-%dT%H:%M:%S} run {runs}: {_run_summary(run)}"
            lines.append(line)
            log(line)
    return lines


def _run_summary(run: Callable[[], Any]) -> str:
    try:
        return run().summary()
    except LockHeld as exc:
        return f"skipped: {exc}"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed run is logged; the service keeps its schedule
        message = str(exc).splitlines()[0] if str(exc) else ""
        print(f"run failed: {type(exc).__name__}: {str(exc)}", file=sys.stderr)
        return f"FAILED {type(exc).__name__}: {message}"
