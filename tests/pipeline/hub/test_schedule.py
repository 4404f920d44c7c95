"""schedule: cron times, one run at a time, a log line per run, a bounded loop."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
from release_fixtures import write_manifest

from pipeline.hub.regenerate import RUN_LOCK, LockHeld, exclusive_lock
from pipeline.hub.schedule import SCHEDULER_LOCK, next_run, run_schedule
from stages.base import UsageError


class FakeClock:
    def __init__(self, start: datetime):
        self.time = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += timedelta(seconds=seconds)


class Summary:
    def __init__(self, text: str):
        self.text = text

    def summary(self) -> str:
        return self.text


def test_next_run_follows_the_cron_expression():
    sunday = datetime(2026, 11, 22, 10, 0)
    assert next_run("0 3 * * 1", sunday) == datetime(2026, 11, 23, 3, 0)       # Monday 03:00
    assert next_run("*/15 * * * *", datetime(2026, 11, 22, 10, 7)) == datetime(2026, 11, 22, 10, 15)
    assert next_run("*/15 * * * *", datetime(2026, 11, 22, 10, 15)) == datetime(2026, 11, 22, 10, 30)


def test_loop_runs_max_runs_times_at_cron_times_and_logs_each(tmp_path):
    clock = FakeClock(datetime(2026, 11, 22, 10, 2, 30))
    runs: list[datetime] = []

    def run():
        runs.append(clock.now())
        return Summary(f"nothing changed #{len(runs)}")

    logged: list[str] = []
    lines = run_schedule(run, tmp_path, "*/5 * * * *", max_runs=2, now=clock.now, sleep=clock.sleep,
                         log=logged.append)
    assert runs == [datetime(2026, 11, 22, 10, 5), datetime(2026, 11, 22, 10, 10)]
    assert clock.slept == [150.0, 300.0]
    assert lines == ["2026-11-22T10:05:00 run 1: nothing changed #1",
                     "2026-11-22T10:10:00 run 2: nothing changed #2"]
    assert logged[0] == "2026-11-22T10:02:30 next run at 2026-11-22T10:05:00" and logged[1] == lines[0]


def test_failed_or_overlapping_runs_are_logged_and_the_loop_goes_on(tmp_path):
    clock = FakeClock(datetime(2026, 11, 22, 10, 0, 0))
    outcomes = iter([RuntimeError("source folder vanished"), LockHeld("another run is in progress"), "ok"])

    def run():
        clock.time += timedelta(minutes=12)             # each run outlasts two 5-minute slots
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return Summary("rebuilt 1 shard(s)")

    lines = run_schedule(run, tmp_path, "*/5 * * * *", max_runs=3, now=clock.now, sleep=clock.sleep,
                         log=lambda line: None)
    assert lines == ["2026-11-22T10:05:00 run 1: FAILED RuntimeError: source folder vanished",
                     "2026-11-22T10:20:00 run 2: skipped: another run is in progress",
                     "2026-11-22T10:35:00 run 3: rebuilt 1 shard(s)"]
    assert clock.slept == [300.0, 180.0, 180.0]          # missed slots are skipped, not fired back to back


def test_a_second_scheduler_on_the_same_release_is_refused(tmp_path):
    with exclusive_lock(tmp_path / SCHEDULER_LOCK):
        with pytest.raises(LockHeld, match="another run is in progress"):
            run_schedule(lambda: Summary("x"), tmp_path, "* * * * *", max_runs=1)
        manifest = write_manifest(tmp_path / "tiny.yaml")
        command = ["schedule", str(manifest), "--out", str(tmp_path), "--cron", "* * * * *",
                   "--max-runs", "1"]
        cli = subprocess.run([sys.executable, "-m", "pipeline", *command], capture_output=True, text=True,
                             timeout=60)
    assert cli.returncode == 1
    assert "another run is in progress (pid " in cli.stderr and SCHEDULER_LOCK in cli.stderr


def test_lock_is_held_during_the_run_and_released_after_it(tmp_path):
    lock = tmp_path / RUN_LOCK
    with exclusive_lock(lock):
        assert lock.read_text().startswith(f"pid {os.getpid()} on host {socket.gethostname()}: run since ")
        held = rf"\(pid {os.getpid()} on host .*: run since .*; lock {re.escape(str(lock))}\)"
        with pytest.raises(LockHeld, match=held):
            with exclusive_lock(lock):
                pass
    with pytest.raises(RuntimeError, match="boom"), exclusive_lock(lock):   # acquired again: released
        raise RuntimeError("boom")
    with exclusive_lock(lock):                                 # and released by the exception too
        assert lock.read_text().count("pid ") == 1


def test_bad_cron_expression_is_bad_input(tmp_path):
    with pytest.raises(UsageError, match="not a cron expression"):
        run_schedule(lambda: Summary("x"), tmp_path, "every monday", max_runs=1)
    manifest = write_manifest(tmp_path / "tiny.yaml")
    cli = subprocess.run([sys.executable, "-m", "pipeline", "schedule", str(manifest), "--out", str(tmp_path),
                          "--cron", "61 * * * *"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "not a cron expression" in cli.stderr
