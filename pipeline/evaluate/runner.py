"""Evaluation as Dask tasks: one task per (model, shard), journaled like `build`.

Each task decodes one tar, runs the model in batches of same-shaped images and
writes the shard's predictions atomically to `.evaluate/<model>/parts/<shard>.parquet`
under the output folder, then the driver appends a line to that model's
`journal.jsonl`. A rerun skips every shard whose fingerprint (model weights,
shard sha256, options, code version) and part sha256 stand in the journal.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.core.journal import JournalWriter, read_journal
from pipeline.core.records import ShardRecord
from pipeline.evaluate.clean import evaluate_source_unit
from pipeline.evaluate.models import EvalModel, predictor_for, resolve_device
from pipeline.evaluate.predict import EvalOptions, batches, parquet_bytes
from pipeline.evaluate.shards import EvalUnit, read_shard
from pipeline.writers.files import ReleaseStore

EVAL_VERSION = "1"


def work_dir(out: Path, model: EvalModel) -> Path:
    return out / ".evaluate" / model.name


def plan_units(shards: list[dict[str, Any]], model: EvalModel, options: EvalOptions) -> list[EvalUnit]:
    identity = {k: v for k, v in model.describe().items() if k != "path"}  # content, not where it lies
    base = {"version": EVAL_VERSION, "model": identity, "options": options.fingerprint_fields()}
    units = []
    for shard in shards:
        digest = hashlib.sha256(json.dumps({**base, "shard": shard["sha256"]}, sort_keys=True).encode())
        units.append(EvalUnit(shard["shard_id"], shard["config"], shard["path"], shard["sha256"],
                              int(shard["count"]), digest.hexdigest()))
    return units


def pending_units(units: list[EvalUnit], work: Path) -> list[EvalUnit]:
    journal = read_journal(work)
    store = ReleaseStore(work)
    return [u for u in units if not _is_done(journal.get(u.shard_id), u, store)]


def _is_done(record: ShardRecord | None, unit: EvalUnit, store: ReleaseStore) -> bool:
    return (record is not None and record.fingerprint == unit.fingerprint and store.exists(unit.part)
            and store.sha256(unit.part) == record.sha256)


def evaluate_shard(unit: EvalUnit, release: str, work: str, model: EvalModel, options: EvalOptions,
                   source: tuple[Any, list[Any]] | None = None) -> ShardRecord:
    """On a worker: predictions for every sample of one shard, written as one Parquet part
    (or, with `source` = (source spec, items), for a slice of the clean source)."""
    if source is not None:
        return evaluate_source_unit(unit, source[1], source[0], work, model, options)
    started = time.perf_counter()
    predictor = predictor_for(model, resolve_device(options.device), options.topk)  # loads once per process
    loaded, cpu = time.perf_counter(), time.thread_time()
    keys, records, predicting = [], [], 0.0
    for batch_keys, images in batches(read_shard(str(Path(release) / unit.path)), options.batch_size):
        keys += batch_keys
        tick = time.perf_counter()
        records += predictor(images)
        predicting += time.perf_counter() - tick
    data = parquet_bytes(keys, records)
    store = ReleaseStore(work)
    store.write_atomic(unit.part, data)
    return ShardRecord(shard_id=unit.shard_id, config=unit.config, fingerprint=unit.fingerprint, path=unit.part,
                       sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), count=len(keys),
                       first_key=min(keys, default=None), last_key=max(keys, default=None),
                       counts={"ok": len(keys), "rejected": 0, "error": 0},
                       seconds=round(time.perf_counter() - started, 4),
                       rows=[{"load_seconds": round(loaded - started, 4), "predict_seconds": round(predicting, 4),
                              "cpu_seconds": round(time.thread_time() - cpu, 4)}])


def run_model(client: Any, release: Path, out: Path, model: EvalModel, units: list[EvalUnit],
              options: EvalOptions, on_event: Callable[[str], None],
              sources: dict[str, tuple[Any, list[Any]]] | None = None) -> dict[str, Any]:
    """Run the model's pending shards; returns counts and per-worker throughput."""
    from pipeline.core.engine import run_units

    work = work_dir(out, model)
    todo = pending_units(units, work)
    on_event(f"{model.name}: {len(units)} shards, {len(units) - len(todo)} already evaluated, {len(todo)} to run")
    journal = JournalWriter(work)
    done: list[ShardRecord] = []

    def on_done(record: ShardRecord) -> None:
        journal.append(record)
        done.append(record)

    started = time.perf_counter()
    run_units(client, todo, evaluate_shard,
              args_for=lambda u: (u, str(release), str(work), model, options, (sources or {}).get(u.shard_id)),
              resources_for=lambda u: {"GPU": 1} if options.gpu else {}, on_done=on_done)
    wall = time.perf_counter() - started
    images, busy = sum(r.count for r in done), sum(r.seconds for r in done)
    loading = sum(row.get("load_seconds", 0.0) for r in done for row in r.rows)
    working = busy - loading
    return {"shards_run": len(done), "shards_skipped": len(units) - len(todo), "images_run": images,
            "task_seconds": round(busy, 3), "model_load_seconds": round(loading, 3),
            "predict_seconds": round(sum(row.get("predict_seconds", 0.0) for r in done for row in r.rows), 3),
            "wall_seconds": round(wall, 3),
            "images_per_second_per_worker": round(images / working, 2) if working > 0 else None,
            # CPU time of the task threads after model load: the per-worker cost, whatever else shares the machine
            "images_per_cpu_second": round(images / cpu, 2) if (cpu := sum(
                row.get("cpu_seconds", 0.0) for r in done for row in r.rows)) > 0 else None,
            "options": asdict(options)}


def read_predictions(work: Path, units: list[EvalUnit]) -> list[dict[str, Any]]:
    """Every shard's predictions in shard order, each row tagged with its config and shard
    (keys repeat across configs: the same source image under every shift)."""
    store = ReleaseStore(work)
    rows = []
    for unit in units:
        for row in store.read_table(unit.part).to_pylist():
            rows.append({"config": unit.config, "shard": unit.path, **row})
    return rows
