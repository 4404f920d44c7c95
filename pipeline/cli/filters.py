"""Filter commands: calibrate thresholds on a labelled set; report what a release kept."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.base import UsageError

CNS_SCORES = "clip_class,clip_class_shift,clip_ref,dino_ref"


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="pick filter thresholds from a human-labelled CSV; write thresholds.yaml",
        description="Each threshold is set so that the score alone removes --target-tpr of the "
                    "out-of-class images; prints TPR (out-of-class removed), FPR (in-class removed) and "
                    "accuracy of each score and of the k-of-n rule, and writes a file a manifest's "
                    "filters: section can include.")
    p.add_argument("csv", help="CSV with `label` (in/out) and `key` (release sample) or `image` (file "
                               "path); columns named like a score are used as that score")
    p.add_argument("--filters", default=CNS_SCORES,
                   help=f"comma-separated score names (default: {CNS_SCORES})")
    p.add_argument("--target-tpr", type=float, default=0.9,
                   help="fraction of out-of-class images each score alone must remove (default: 0.9)")
    p.add_argument("--k", type=int, default=2,
                   help="keep when at least k scores pass (default: 2, as CNS-Bench)")
    p.add_argument("--release", default=None,
                   help="release folder whose samples.parquet holds the keys' scores")
    p.add_argument("--manifest", default=None, help="manifest whose filters score the `image` files")
    p.add_argument("--out", default="thresholds.yaml",
                   help="thresholds file to write (default: thresholds.yaml)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "report", help="HTML + Markdown report of a filtered release: counts, acceptance, histograms",
        description="Reads samples.parquet, provenance.json, the shards and rejected/ thumbnails of a "
                    "release; writes OUT (HTML), OUT with .md, and the PNG plots in OUT's stem + _files/.")
    p.add_argument("release", help="release folder")
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--examples", type=int, default=12, help="kept / rejected examples to show (default: 12)")
    p.set_defaults(func=cmd_report)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.views.calibrate import CalibrationError, format_metrics, run_calibration

    names = [n.strip() for n in args.filters.split(",") if n.strip()]
    if not names:
        raise UsageError("--filters names no score")
    if not 0.0 < args.target_tpr < 1.0:
        raise UsageError(f"--target-tpr must be between 0 and 1, got {args.target_tpr}")
    if args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    try:
        result = run_calibration(args.csv, names, args.target_tpr, args.k, args.out,
                                 release=args.release, manifest=args.manifest)
    except (CalibrationError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    print(format_metrics(result["metrics"]))
    print(f"wrote {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.views.report import write_report

    if not (Path(args.release) / "samples.parquet").exists():
        raise UsageError(f"{args.release} is not a built release (no samples.parquet)")
    report = write_report(args.release, args.out, examples=args.examples)
    c = report.counts
    print(f"{c['total']} samples: {c['ok']} kept, {c['rejected']} rejected, {c['error']} errors")
    print(f"wrote {report.html}, {report.markdown} and {len(report.images)} PNGs")
    return 0
