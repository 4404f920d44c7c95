"""`shiftforge` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad input.

All command-line glue lives in this package, one module per group of commands;
each module named in COMMAND_MODULES has `add_commands(subparsers)` which registers its sub-commands with
`set_defaults(func=...)`; `func(args) -> int` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from stages.base import UsageError

COMMAND_MODULES = [
    "pipeline.cli.commands",   # build, plan, verify, preview, schema
    "pipeline.cli.export",     # export (medmnist-c)
    "pipeline.cli.metashift",  # metashift subsets | sweep | report
    "pipeline.cli.filters",    # calibrate, report (filters)
    "pipeline.cli.hub",        # publish, regenerate, schedule
    "pipeline.cli.sliders",    # train-slider, convert-slider
    "pipeline.cli.evaluate",   # evaluate
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shiftforge",
        description="Build, curate, publish and regenerate shifted test sets for robustness benchmarks.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from pipeline import __version__
        print(f"shiftforge {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pipeline.core.manifest import ManifestError
    from stages.registry import ExtensionError
    try:
        return int(args.func(args) or 0)
    except (ManifestError, UsageError, ExtensionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `shiftforge plan … | head`: the reader has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a runtime failure: one line, the traceback in a log file
        return runtime_failure(args.command, exc)


def runtime_failure(command: str, exc: BaseException) -> int:
    """Exit 1 with one line naming a log file that holds the traceback."""
    import os
    import tempfile
    import traceback

    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    try:
        fd, path = tempfile.mkstemp(prefix=f"shiftforge-{command}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(traceback.format_exception(exc)))
        where = f"details: {path}"
    except OSError as log_exc:
        where = f"details not saved: {log_exc}"
    print(f"error: {command} failed: {type(exc).__name__}: {first} ({where})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
