"""`shiftforge` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad input.

Commands live next to what they drive; each module named in COMMAND_MODULES
has `add_commands(subparsers)` which registers its sub-commands with
`set_defaults(func=...)`; `func(args) -> int` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "pipeline.commands",      # build, plan, verify, preview, schema
    "pipeline.export",        # export (medmnist-c)
    "pipeline.metashift_cli",  # metashift subsets | sweep | report
    "pipeline.filters_cli",   # calibrate, report (filters)
    "pipeline.hub_cli",       # publish, regenerate, schedule
    "stages.generative.cli",  # train-slider
    "stages.generative.convert",  # convert-slider
]


class UsageError(Exception):
    """Bad input from the user (exit 2)."""


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
    from pipeline.manifest import ManifestError
    try:
        return int(args.func(args) or 0)
    except (ManifestError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `shiftforge plan … | head`: the reader has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
