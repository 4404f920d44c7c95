"""Bad input exits 2 with one line and writes nothing; a runtime failure exits 1 with one line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def shiftforge(*args, cwd=ROOT, timeout=180):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("case", ["file", "under-file", "proc", "workers", "scheduler"])
def test_bad_build_arguments_exit_2_with_one_line(tmp_path, tiny_release, write_manifest, case, capsys):
    from pipeline.cli import main

    manifest = write_manifest(tiny_release)
    (tmp_path / "f").write_text("x")
    out, extra = {"file": (tmp_path / "f", []), "under-file": (tmp_path / "f" / "rel", []),
                  "proc": ("/proc/self/rel", []), "workers": (tmp_path / "rel", ["--workers", "-1"]),
                  "scheduler": (tmp_path / "rel", ["--scheduler", "not a url"])}[case]
    assert main(["build", str(manifest), "--out", str(out), *extra]) == 2
    assert one_line(capsys.readouterr().err).startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "manifest.yaml"]


@pytest.mark.slow
def test_runtime_failure_is_one_line_and_a_later_success_removes_the_log(tmp_path, tiny_release, write_manifest):
    manifest = write_manifest(tiny_release)
    out = tmp_path / "release"
    out.mkdir()
    (out / "data").write_text("a file where the shards' folder belongs")
    result = shiftforge("build", str(manifest), "--out", str(out), "--workers", "1", "--no-progress")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    failures = [line for line in lines if not line.startswith(("planned ", "Dask dashboard: "))]
    assert len(failures) == 1 and re.fullmatch(
        rf"build failed: NotADirectoryError: \[Errno 20\] Not a directory: '{out}/data/[a-z_]+-[15]' "
        rf"\(details: {out}/build-error.log\)", failures[0]), lines
    assert not [line for line in lines if "Traceback" in line or "Compute Failed" in line]
    assert "Traceback (most recent call last)" in (out / "build-error.log").read_text()

    (out / "data").unlink()
    result = shiftforge("build", str(manifest), "--out", str(out), "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert not (out / "build-error.log").exists()


def test_a_log_that_cannot_be_written_is_still_one_line(tmp_path, monkeypatch, capsys):
    """A full disk: the build failed and build-error.log cannot be written either."""
    import errno

    from pipeline.cli.commands import build_failed
    from pipeline.writers.files import ReleaseStore

    def full(self, rel, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ReleaseStore, "write_atomic", full)
    assert build_failed(str(tmp_path), OSError(errno.ENOSPC, "No space left on device")) == 1
    assert one_line(capsys.readouterr().err) == (
        "build failed: OSError: [Errno 28] No space left on device (details not saved: cannot write "
        "build-error.log: OSError: [Errno 28] No space left on device)")
    assert not (tmp_path / "build-error.log").exists()


def test_an_unexpected_failure_is_one_line_with_the_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    import pipeline.release.verify
    from pipeline.cli import main

    def broken(out):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(pipeline.release.verify, "verify_release", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "logs"))
    (tmp_path / "logs").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert main(["verify", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    log = next((tmp_path / "logs").glob("shiftforge-verify-*.log"))
    assert line == f"error: verify failed: RuntimeError: disk on fire (details: {log})"
    assert "Traceback (most recent call last)" in log.read_text() and "second line" in log.read_text()


def test_a_shard_that_cannot_be_read_is_a_problem_not_a_crash(tmp_path):
    from pipeline.release.verify import VerifyReport, _check_shard
    from pipeline.writers.files import ReleaseStore

    (tmp_path / "data" / "c" / "test-00000.tar").mkdir(parents=True)     # a folder where a tar belongs
    report = VerifyReport()
    _check_shard(ReleaseStore(tmp_path), {"path": "data/c/test-00000.tar", "sha256": "x", "count": 1}, None, report)
    assert len(report.problems) == 1 and report.problems[0].startswith("data/c/test-00000.tar: unreadable (")
