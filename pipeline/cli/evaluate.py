"""`shiftforge evaluate RELEASE --model M [--model M2 …] [--baseline results/x.json] [--out DIR]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="run models on a release and report each benchmark's metric",
                       description="One Dask task per shard and model; resumes after a crash; per-sample "
                                   "predictions go to results/<model>.predictions.parquet, metrics to "
                                   "results/<model>.json, one plot per metric beside them.")
    p.add_argument("release", help="release folder (built by `shiftforge build`)")
    p.add_argument("--model", action="append", required=True,
                   help="transformers folder (classifier or object detector), .pt2, TorchScript file, or a "
                        ".json/.yaml spec {path, name, input_size, mean, std, labels}; repeat for several")
    p.add_argument("--baseline", default=None, help="results/<model>.json of a baseline model (CE, mCE, BE, ER)")
    p.add_argument("--out", default=None, help="folder for results/ (default: the release folder)")
    p.add_argument("--configs", default=None, help="comma-separated configs to evaluate (default: all)")
    p.add_argument("--clean-source", action="store_true",
                   help="also evaluate the release's source images as config 'clean' (clean error, relative mCE, "
                        "rBE, attack success); the source must be readable here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--topk", type=int, default=5, help="predictions stored per sample (default: 5)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--gpu", action="store_true", help="run tasks only on workers offering resource GPU")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: one per core)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import EvalOptions, ReleaseError, evaluate_release, load_baseline, parse_model
    from pipeline.evaluate.shards import read_provenance
    from stages.adversarial.models import ModelLoadError
    from stages.base import UsageError

    if args.batch_size < 1 or args.topk < 1:
        raise UsageError("--batch-size and --topk must be at least 1")
    try:  # every input is checked before any work starts or anything is written
        read_provenance(Path(args.release))
        models = [parse_model(m) for m in args.model]
        if args.baseline:
            load_baseline(args.baseline)
    except (ReleaseError, ModelLoadError, ValueError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UsageError(f"model names must be unique, got {names} (use spec files with name:)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import distributed  # noqa: F401 - sets its logger to INFO on import; quiet it after that
    logging.getLogger("distributed").setLevel(logging.WARNING)
    options = EvalOptions(batch_size=args.batch_size, topk=args.topk, device=args.device, gpu=args.gpu)
    configs = args.configs.split(",") if args.configs else None
    try:
        written = evaluate_release(args.release, models, args.out, options=options, baseline=args.baseline,
                                   configs=configs, workers=args.workers, scheduler=args.scheduler,
                                   clean_source=args.clean_source,
                                   on_event=lambda msg: print(msg, file=sys.stderr))
    except ReleaseError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    except Exception as exc:  # noqa: BLE001 - one line for the user, details in the log
        from pipeline.core.task import format_traceback

        log = Path(args.out or args.release) / ".evaluate" / "error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(format_traceback(exc))
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"evaluate failed: {type(exc).__name__}: {first} (details: {log})", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0
