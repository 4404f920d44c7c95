"""Core commands: build, plan, verify, preview, schema."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console

from pipeline.core.manifest import ROOT_MANIFESTS
from stages.base import UsageError

DEMO_MANIFEST = ROOT_MANIFESTS / "demo.yaml"
console = Console(stderr=True)


def _manifest_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", nargs="?", default=str(DEMO_MANIFEST),
                        help="release manifest YAML (default: the embedded demo, manifests/demo.yaml)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a release from a manifest (resumes if interrupted)",
                       description="Plan one task per output shard and run them on Dask. Rerunning on the "
                                   "same --out skips every shard that is already complete.")
    _manifest_arg(p)
    p.add_argument("--out", required=True,
                   help="release folder or fsspec URL, e.g. s3://bucket/release (created if missing)")
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes (default: one per core)")
    p.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(default: $DASK_SCHEDULER_ADDRESS, else a LocalCluster)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any sample ended with status=error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="if another build/regenerate/publish holds --out, wait up to SECONDS for it "
                        "(default: 0, exit 1 at once)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("plan", help="print the work a build would do, without running it")
    _manifest_arg(p)
    p.add_argument("--out", default=None,
                   help="release folder or URL: also show which shards are already done")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("verify", help="re-hash every shard against provenance.json; exit 1 on mismatch")
    p.add_argument("release", help="release folder or fsspec URL, e.g. s3://bucket/release")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "preview", help="contact-sheet PNG: rows = shifts, columns = clean + each severity/scale",
        description="Contact-sheet PNG of a built release. Layout 'shifts': one block per source image, "
        "stacked vertically; rows are shifts (gaussian_noise, fog, a slider's shift), columns are the clean "
        "source image then each severity, epsilon or slider scale; configs without a level (style domains, "
        "splits) close the block, one row each; a grey cell says why a sample is absent (rejected, error, "
        "missing). Layout 'grid': rows are source images, columns are configs (a slider config shows every "
        "scale). 'auto' (default) draws the grid while it is at most 8 configs wide (each slider scale "
        "counts), else shifts.")
    p.add_argument("release", help="release folder")
    p.add_argument("--out", default="preview.png", help="PNG to write (default: preview.png)")
    p.add_argument("--layout", choices=("auto", "shifts", "grid"), default="auto",
                   help="shifts, grid or auto (default: auto)")
    p.add_argument("--sources", "--rows", dest="sources", type=int, default=None, metavar="N",
                   help="how many source images, the most complete first: one block each (shifts) or one "
                   "row each (grid); default 1 for shifts, 6 for grid")
    p.add_argument("--source", action="append", default=[], metavar="KEY",
                   help="show this source image (its source key; repeat for several); overrides --sources")
    p.add_argument("--configs", default="*", help="glob over config names, e.g. 'fog-*' (default: all)")
    p.add_argument("--max-columns", type=int, default=None,
                   help="grid: most configs (default 48); shifts: most levels per row, spread evenly from "
                   "the weakest to the strongest (default 8)")
    p.add_argument("--tile", type=int, default=112, help="tile side in pixels, 16-512 (default: 112)")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("schema", help="write the JSON Schemas of the release manifest and provenance")
    p.add_argument("--out", default=str(DEMO_MANIFEST.parent / "schema"), help="folder for the schema files")
    p.set_defaults(func=cmd_schema)


def cmd_build(args: argparse.Namespace) -> int:
    from pipeline.core.manifest import ManifestError, load_manifest

    release = load_manifest(args.manifest)  # validation errors exit 2 before anything is written (or imported)
    from pipeline.core.build import build_release, check_out
    from pipeline.core.engine import ClusterError, check_cluster_args
    from pipeline.core.lock import LockHeld

    check_cluster_args(args.workers, args.scheduler)
    check_out(args.out)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = build_release(release, args.out, workers=args.workers, scheduler=args.scheduler,
                               progress=not args.no_progress, on_event=lambda msg: console.print(msg),
                               wait=args.wait)
    except (ManifestError, UsageError):
        raise  # found while indexing/planning (e.g. an unknown class name): bad input, exit 2
    except (ClusterError, LockHeld) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the user, details in the log
        return build_failed(args.out, exc)
    remove_stale_error_log(result.out)
    c = result.counts
    console.print(f"built {result.built} shards, skipped {result.skipped} unchanged"
                  + (f", removed {len(result.removed)} orphaned" if result.removed else "")
                  + f" in {result.seconds:.1f}s — {c['total']} samples: {c['ok']} ok, "
                  f"{c['rejected']} rejected, {c['error']} errors → {result.out}", soft_wrap=True)
    if c["error"]:
        console.print(f"[yellow]{c['error']} samples failed; see status/reason in {result.out}/samples.parquet",
                      soft_wrap=True)
    return 1 if args.strict and c["error"] else 0


BUILD_ERROR_LOG = "build-error.log"


def build_failed(out: str, exc: BaseException) -> int:
    """One line on the console; the traceback goes to <out>/build-error.log when that can be written."""
    from pipeline.core.build import absolute_out
    from pipeline.core.task import format_traceback
    from pipeline.writers.files import ReleaseStore

    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    try:
        store = ReleaseStore(absolute_out(out))
        store.write_atomic(BUILD_ERROR_LOG, format_traceback(exc).encode())
        where = f"details: {store.url(BUILD_ERROR_LOG)}"
    except Exception as log_exc:  # noqa: BLE001 - e.g. a full disk: say so, still one line
        where = f"details not saved: cannot write {BUILD_ERROR_LOG}: {type(log_exc).__name__}: {log_exc}"[:300]
    print(f"build failed: {type(exc).__name__}: {first} ({where})", file=sys.stderr)
    return 1


def remove_stale_error_log(out: str | Path) -> None:
    """A successful build removes the error log an earlier failed one left."""
    from pipeline.writers.files import ReleaseStore

    store = ReleaseStore(out)
    if store.exists(BUILD_ERROR_LOG):
        store.rm(BUILD_ERROR_LOG)


def cmd_plan(args: argparse.Namespace) -> int:
    from collections import Counter

    from pipeline.core.manifest import load_manifest

    release = load_manifest(args.manifest)   # a bad manifest fails before Dask is imported
    from pipeline.core.journal import read_journal, shard_is_done
    from pipeline.core.plan import plan_release

    plan = plan_release(release)
    journal = read_journal(args.out) if args.out else {}
    done = sum(shard_is_done(journal.get(u.shard_id), u, args.out) for u in plan.units) if args.out else 0
    per_config = Counter(u.variant.config for u in plan.units)
    print(f"release {release.name} {release.version}: {len(plan.index)} source items "
          f"({release.source.kind}), {len(plan.variants)} configs, {len(plan.units)} shards"
          + (f", {done} already done" if args.out else ""))
    for _, variant in plan.variants:
        print(f"  {variant.config:<32} {per_config[variant.config]:>6} shards  {variant.params}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.release.verify import stop_io_threads, verify_release
    from pipeline.writers.files import ReleaseStore

    if not ReleaseStore(args.release).isdir(""):
        raise UsageError(f"{args.release} is not a folder")
    try:
        report = verify_release(args.release)
    finally:
        stop_io_threads()
    for problem in report.problems:
        print(f"MISMATCH {problem}")
    print(f"{'OK' if report.ok else 'FAILED'}: {report.shards} shards, {report.samples} samples checked, "
          f"{len(report.problems)} problems")
    return 0 if report.ok else 1


def cmd_preview(args: argparse.Namespace) -> int:
    from pipeline.views.preview import contact_sheet

    if not (Path(args.release) / "provenance.json").exists():
        raise UsageError(f"{args.release} has no provenance.json; build it first")
    if not 16 <= args.tile <= 512:
        raise UsageError(f"--tile must be 16-512 pixels, got {args.tile}")
    try:
        path = contact_sheet(args.release, args.out, rows=args.sources, configs=args.configs,
                             max_columns=args.max_columns, tile=args.tile, layout=args.layout,
                             sources=args.source)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {path}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from pipeline.core.manifest import export_schema
    from pipeline.release.provenance_schema import export_provenance_schema

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {export_schema(out)}")
    print(f"wrote {export_provenance_schema(out)}")
    return 0
