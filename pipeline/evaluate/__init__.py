"""`shiftforge evaluate`: run models on a release and report each benchmark's own metric.

Steps per model: plan one task per shard (fingerprinted by weights, shard sha256 and
options) → run the pending ones on Dask, each writing its shard's predictions →
join predictions to samples.parquet → metrics of every benchmark the release holds
→ `results/<model>.json`, `results/<model>.predictions.parquet` and one plot per
metric under the output folder (the release itself by default).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.evaluate.clean import CLEAN_CONFIG, clean_rows, source_shards
from pipeline.evaluate.metrics import compute_metrics, per_config
from pipeline.evaluate.models import EvalModel, model_labels, parse_model
from pipeline.evaluate.plots import plot_results
from pipeline.evaluate.results import (
    RESULTS_DIR,
    RESULTS_SCHEMA,
    join_predictions,
    load_baseline,
    read_results,
    write_results,
)
from pipeline.evaluate.runner import EVAL_VERSION, EvalOptions, plan_units, read_predictions, run_model, work_dir
from pipeline.evaluate.shards import ReleaseError, read_provenance, release_shards, sample_table

__all__ = ["EvalOptions", "ReleaseError", "evaluate_release", "load_baseline", "parse_model", "read_results"]


def evaluate_release(release: str | Path, models: list[EvalModel], out: str | Path | None = None, *,
                     options: EvalOptions | None = None, baseline: str | Path | None = None,
                     configs: list[str] | None = None, workers: int | None = None, scheduler: str | None = None,
                     clean_source: bool = False, on_event: Callable[[str], None] = lambda _msg: None) -> list[Path]:
    """Evaluate every model; returns the results files written."""
    from pipeline.core.engine import dask_client

    release, options = Path(release), options or EvalOptions()
    out = Path(out) if out is not None else release
    provenance = read_provenance(release)
    shards = release_shards(provenance, configs)
    samples = sample_table(release)
    sources: dict[str, tuple[Any, list[Any]]] = {}
    annotations = None
    if clean_source:
        spec, clean_shards, members, clean_coco = source_shards(provenance)
        annotations = None if clean_coco is None else {CLEAN_CONFIG: clean_coco}
        shards += clean_shards
        samples += clean_rows(members)
        sources = {shard_id: (spec, items) for shard_id, items in members.items()}
    base = load_baseline(baseline) if baseline is not None else None
    written = []
    with dask_client(workers=workers, scheduler=scheduler, dashboard=False) as client:
        for model in models:
            units = plan_units(shards, model, options)
            run = run_model(client, release, out, model, units, options, on_event, sources)
            labels = model_labels(model)
            rows = join_predictions(samples, read_predictions(work_dir(out, model), units), labels)
            document = _document(model, labels, release, provenance, rows, run, base, annotations)
            path = write_results(out, model.name, document, rows)
            plots = plot_results(document, out / RESULTS_DIR)
            on_event(f"{model.name}: {len(rows)} samples → {path}" + (f" (+{len(plots)} plots)" if plots else ""))
            written.append(path)
    if out.resolve() == release.resolve():
        from pipeline.release.card import write_dataset_card

        write_dataset_card(release)  # the card's Results section
    return written


def _document(model: EvalModel, labels: list[str], release: Path, provenance: dict[str, Any],
              rows: list[dict[str, Any]], run: dict[str, Any], baseline: dict[str, Any] | None,
              annotations: dict[str, Any] | None = None) -> dict[str, Any]:
    info = provenance.get("release", {})
    labelled = sum(r["target"] is not None or (model.multilabel and isinstance(r["label"], list)) for r in rows)
    return {
        "schema": RESULTS_SCHEMA,
        "model": {**model.describe(), "labels": labels},
        "release": {"name": info.get("name"), "version": info.get("version"), "revision": provenance.get("revision"),
                    "shards_digest": provenance.get("shards_digest"), "path": str(release)},
        "baseline": None if baseline is None else {"model": baseline["model"]["name"],
                                                   "weights_sha256": baseline["model"]["weights_sha256"],
                                                   "release": baseline.get("release")},
        "evaluator": _evaluator(),
        "samples": len(rows), "labelled": labelled,
        "notes": [] if labelled or not rows else [
            "no sample carries a label the model can be scored against: predictions are stored, "
            "label-based metrics are left out"],
        "per_config": per_config(rows),
        "metrics": compute_metrics(rows, release=release, provenance=provenance, model_labels=labels,
                                   baseline=None if baseline is None else baseline["metrics"],
                                   annotations=annotations, multilabel=model.multilabel),
        "run": run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "predictions": f"{RESULTS_DIR}/{model.name}.predictions.parquet",
        "predictions_rows_sha256": hashlib.sha256(repr([(r["key"], r.get("topk_index")) for r in rows])
                                                  .encode()).hexdigest(),
    }


def _evaluator() -> dict[str, Any]:
    import torch

    from pipeline import __version__

    return {"version": EVAL_VERSION, "shiftforge": __version__, "torch": torch.__version__}
