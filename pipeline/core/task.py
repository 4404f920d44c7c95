"""What one Dask task does: read sources → stage → filters → encode → write one shard.

Runs on a worker. Stages, sources and filters are built once per worker
process (model weights load once) and reused by every task of the release.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.manifest import manifest_sha256
from pipeline.core.records import ShardRecord, WorkUnit
from pipeline.core.seeding import derive_seed
from pipeline.sources import Source, SourceItem, open_source
from pipeline.writers.files import filesystem
from pipeline.writers.thumbnails import save_rejected_thumbnails
from pipeline.writers.webdataset import encode_image, write_tar
from pipeline.writers.zarr_store import ZarrLayout, write_region
from stages import Batch, Stage, get_stage
from stages.base import Variant


@dataclass(frozen=True)
class TaskContext:
    release: Any                                   # the validated Release model
    out: str                                       # release root (path or fsspec URL)
    zarr: dict[str, ZarrLayout] = field(default_factory=dict)


_PROCESS_CACHE: dict[tuple, Any] = {}


def _cached(kind: str, release: Any, index: int, build) -> Any:
    key = (kind, manifest_sha256(release), index)
    if key not in _PROCESS_CACHE:
        _PROCESS_CACHE[key] = build()
    return _PROCESS_CACHE[key]


def stage_for(release: Any, stage_index: int) -> Stage:
    spec = release.shifts[stage_index]
    return _cached("stage", release, stage_index, lambda: get_stage(spec.stage)(spec))


def source_for(release: Any) -> Source:
    return _cached("source", release, 0, lambda: open_source(release.source))


def filters_for(release: Any):
    if not getattr(release, "filters", None):
        return None
    from stages.filters import FilterChain

    return _cached("filters", release, 0, lambda: FilterChain(release.filters))


def filters_fingerprint(release: Any) -> Any:
    """Filter versions, params, thresholds, rule and weight sha256s (None without filters)."""
    chain = filters_for(release)
    if chain is None:
        return None
    try:
        return chain.fingerprint()
    except (ValueError, FileNotFoundError) as exc:  # a missing or wrong filter model is bad input
        from pipeline.core.manifest import ManifestError

        raise ManifestError(f"filters: {exc}") from None


def unit_tar(release: Any, shard_id: str) -> str | None:
    """Where a unit's tar goes: the final shard, or with filters a staging tar that the
    second pass (`pipeline.core.packing`) packs into evenly filled shards."""
    if "webdataset" not in release.output.formats:
        return None
    if getattr(release, "filters", None):
        from pipeline.core.packing import staging_tar

        return staging_tar(shard_id)
    return f"data/{shard_id}.tar"


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:500]


def load_batch(source: Source, items: list[SourceItem], release: Any, stage: Stage,
               variant: Variant) -> tuple[Batch, list[dict]]:
    """Decode items; items that fail become error rows instead of batch members."""
    keys, images, seeds, labels, metas, errors = [], [], [], [], [], []
    for item in items:
        try:
            loaded = source.load(item)
            if stage.needs_image and loaded.image is None:
                raise ValueError("source item has no pixels but the stage needs an image")
        except Exception as exc:  # noqa: BLE001 - a bad item is data, not a crash
            errors.append({"item": item, "reason": short_error(exc)})
            continue
        keys.append(item.key)
        images.append(loaded.image)
        seeds.append(derive_seed(release.seed, stage.name, variant.config, item.key))
        labels.append(item.label)
        metas.append(loaded.meta)
    return Batch(keys=keys, images=images, seeds=seeds, labels=labels, meta=metas), errors


def apply_stage(stage: Stage, batch: Batch, variant: Variant) -> Batch:
    """Apply to the whole batch; if that raises, isolate the failing samples one by one."""
    if len(batch) == 0:
        return batch
    try:
        return stage.apply(batch, variant)
    except Exception:  # noqa: BLE001
        parts = []
        for i in range(len(batch)):
            single = batch.select([i])
            try:
                parts.append(stage.apply(single, variant))
            except Exception as exc:  # noqa: BLE001
                single.fail(0, f"{stage.name}: {short_error(exc)}")
                parts.append(single)
        return Batch.concat(parts)


def sample_document(batch: Batch, i: int, ctx: TaskContext, stage: Stage, variant: Variant,
                    source_sha: dict[str, str]) -> dict[str, Any]:
    """Per-sample provenance: the `.json` member of the tar and the parquet row."""
    return {
        "key": batch.keys[i],
        "source": {"key": batch.source_keys[i], "sha256": source_sha.get(batch.source_keys[i]),
                   "kind": ctx.release.source.kind},
        "shift": {"stage": stage.name, "stage_version": stage.version, "config": variant.config,
                  **variant.params, **batch.shift[i]},
        "seed": batch.seeds[i],
        "label": _jsonable(batch.labels[i]),
        "scores": batch.scores[i],
        "meta": _jsonable(batch.meta[i]),
        "release": {"name": ctx.release.name, "version": ctx.release.version},
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))


def row_for(doc: dict[str, Any], status: str, reason: str, shard: str | None) -> dict[str, Any]:
    shift = doc["shift"]
    return {
        "key": doc["key"], "source_key": doc["source"]["key"], "source_sha256": doc["source"]["sha256"],
        "config": shift["config"], "stage": shift["stage"], "shift": json.dumps(shift, sort_keys=True),
        "seed": doc["seed"], "label": json.dumps(doc["label"]), "status": status, "reason": reason,
        "scores": json.dumps(doc["scores"], sort_keys=True), "meta": json.dumps(doc["meta"], sort_keys=True),
        "split": (doc["meta"] or {}).get("split"), "shard": shard,
    }


def error_row(item: SourceItem, reason: str, stage: Stage, variant: Variant, release: Any) -> dict[str, Any]:
    doc = {"key": item.key, "source": {"key": item.key, "sha256": item.sha256},
           "shift": {"stage": stage.name, "config": variant.config, **variant.params},
           "seed": derive_seed(release.seed, stage.name, variant.config, item.key),
           "label": _jsonable(item.label), "scores": {}, "meta": {}}
    return row_for(doc, "error", reason, None)


def encode_members(image: np.ndarray, doc: dict[str, Any], release: Any) -> dict[str, bytes]:
    ext, data = encode_image(image, release.output.encoding, release.output.jpeg_quality)
    members = {ext: data, "json": json.dumps(doc, sort_keys=True).encode()}
    label = doc["label"]
    if isinstance(label, int) and not isinstance(label, bool):
        members["cls"] = str(label).encode()
    return members


def run_unit(unit: WorkUnit, items: list[SourceItem], ctx: TaskContext) -> ShardRecord:
    started = time.perf_counter()
    release, variant = ctx.release, unit.variant
    stage = stage_for(release, unit.stage_index)
    batch, load_errors = load_batch(source_for(release), items, release, stage, variant)
    batch = apply_stage(stage, batch, variant)
    chain = filters_for(release)
    if chain is not None and len(batch):
        batch = chain(batch, variant)

    shard_rel = unit_tar(release, unit.shard_id)
    source_sha = {item.key: item.sha256 for item in items}
    rows = [error_row(e["item"], e["reason"], stage, variant, release) for e in load_errors]
    members, zarr_slots = [], []
    for i in range(len(batch)):
        doc = sample_document(batch, i, ctx, stage, variant, source_sha)
        status, reason, image = batch.status[i], batch.reason[i], batch.images[i]
        if status == "ok":
            try:
                members.append((batch.keys[i], encode_members(image, doc, release)))
            except Exception as exc:  # noqa: BLE001
                status, reason, image = "error", f"encode: {short_error(exc)}", None
        rows.append(row_for(doc, status, reason, shard_rel if status == "ok" else None))
        zarr_slots.append((batch.keys[i], batch.labels[i], image if status == "ok" else None))
    rejected = [i for i in range(len(batch)) if batch.status[i] == "rejected"]
    if rejected:
        save_rejected_thumbnails(*filesystem(ctx.out), variant.config, [batch.keys[i] for i in rejected],
                                 [batch.images[i] for i in rejected])
    return _write_outputs(unit, ctx, shard_rel, members, zarr_slots, rows, started)


def _write_outputs(unit: WorkUnit, ctx: TaskContext, shard_rel: str | None, members: list, zarr_slots: list,
                   rows: list[dict], started: float) -> ShardRecord:
    sha, nbytes = None, 0
    if shard_rel is not None:
        fs, root = filesystem(ctx.out)
        sha, nbytes = write_tar(fs, f"{root}/{shard_rel}", members)
    zarr_info = None
    layout = ctx.zarr.get(unit.variant.config)
    if layout is not None:
        digest = write_region(layout, unit.unit_index, zarr_slots)
        start, stop = layout.region(unit.unit_index)
        zarr_info = {"path": f"zarr/{unit.variant.config}.zarr", "start": start, "stop": stop,
                     "digest": digest, "layout": layout.as_attrs()}
    counts = {"ok": 0, "rejected": 0, "error": 0}
    for row in rows:
        counts[row["status"]] += 1
    ok_keys = sorted(k for k, _ in members)
    return ShardRecord(
        shard_id=unit.shard_id, config=unit.variant.config, fingerprint=unit.fingerprint, path=shard_rel,
        sha256=sha, bytes=nbytes, count=len(members), first_key=ok_keys[0] if ok_keys else None,
        last_key=ok_keys[-1] if ok_keys else None, counts=counts,
        seconds=round(time.perf_counter() - started, 4), zarr=zarr_info, rows=rows)


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
