"""The clean reference from the release's own source (`evaluate --clean-source`).

Relative mCE, rBE, clean accuracy and attack success need the model's figures on
the unshifted images. A release keeps the manifest of its source, so the source
is opened again (it must be readable here), indexed, and its items — the exact
pixels the stages received — are evaluated as config `clean`, one task per slice
of `samples_per_shard` items, journaled like the shards. A source item whose
sha256 differs from the release's source index is still evaluated, but the index
hash is part of the fingerprint, so a changed source re-runs.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pipeline.core.records import ShardRecord
from pipeline.evaluate.models import EvalModel, predictor_for, resolve_device
from pipeline.evaluate.predict import EvalOptions, batches, parquet_bytes
from pipeline.evaluate.shards import EvalUnit, ReleaseError
from pipeline.writers.files import ReleaseStore

CLEAN_CONFIG = "clean"
CLEAN_STAGE = "source"


def source_shards(provenance: dict[str, Any]) -> tuple[Any, list[dict[str, Any]], dict[str, list[Any]],
                                                     dict[str, Any] | None]:
    """(source spec, shard-like records for `plan_units`, items per shard id, COCO annotations of
    the clean items or None); ReleaseError if the source cannot be read."""
    from pipeline.core.manifest import ManifestError, parse_release
    from pipeline.sources import SourceError, open_source

    try:
        manifest = parse_release(provenance["manifest"])
        source = open_source(manifest.source)
        items = list(source.index())
    except (KeyError, ManifestError, SourceError, OSError) as exc:
        raise ReleaseError(f"--clean-source: cannot read the release's source: {str(exc).splitlines()[0]}") from None
    if CLEAN_CONFIG in {s.get("config") for s in provenance.get("shards", [])}:
        raise ReleaseError(f"--clean-source: the release already has a config named {CLEAN_CONFIG!r}")
    size = manifest.output.samples_per_shard
    shards, members = [], {}
    for number, start in enumerate(range(0, len(items), size)):
        chunk = items[start:start + size]
        digest = hashlib.sha256("".join(f"{i.key}:{i.sha256};" for i in chunk).encode()).hexdigest()
        shard_id = f"{CLEAN_CONFIG}/source-{number:05d}"
        shards.append({"shard_id": shard_id, "config": CLEAN_CONFIG, "path": "", "sha256": digest,
                       "count": len(chunk)})
        members[shard_id] = chunk
    return manifest.source, shards, members, clean_annotations(source, items)


def clean_annotations(source: Any, items: list[Any]) -> dict[str, Any] | None:
    """A COCO source's instances json for its own items, file names = `<key>.png` like a domain's."""
    dataset = getattr(source, "dataset", None)
    if not isinstance(dataset, dict) or "annotations" not in dataset:
        return None
    records = {im["id"]: im for im in dataset["images"]}
    ids = {item.ref: item.key for item in items if item.ref in records}
    images = [{"id": i, "file_name": f"{key}.png", "width": records[i].get("width"),
               "height": records[i].get("height")} for i, key in ids.items()]
    annotations = [a for a in dataset["annotations"] if a["image_id"] in ids]
    return {"images": images, "annotations": annotations, "categories": dataset["categories"]}


def clean_rows(members: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Sample-table rows of the clean items (joined to predictions like any sample)."""
    return [{"key": item.key, "source_key": item.key, "config": CLEAN_CONFIG, "stage": CLEAN_STAGE, "shift": {},
             "label": item.label, "meta": {}, "split": None}
            for chunk in members.values() for item in chunk]


def evaluate_source_unit(unit: EvalUnit, items: list[Any], source_spec: Any, work: str, model: EvalModel,
                         options: EvalOptions) -> ShardRecord:
    """On a worker: predictions for a slice of source items (a failed load is skipped and counted)."""
    from pipeline.sources import open_source

    started = time.perf_counter()
    predictor = predictor_for(model, resolve_device(options.device), options.topk)
    source, errors = open_source(source_spec), 0

    def loaded():
        nonlocal errors
        for item in items:
            try:
                image = source.load(item).image
            except Exception:  # noqa: BLE001 - an unreadable source item is counted, not fatal
                errors += 1
                continue
            if image is not None:
                yield item.key, image

    keys, records = [], []
    for batch_keys, images in batches(loaded(), options.batch_size):
        keys += batch_keys
        records += predictor(images)
    data = parquet_bytes(keys, records)
    ReleaseStore(work).write_atomic(unit.part, data)
    return ShardRecord(shard_id=unit.shard_id, config=unit.config, fingerprint=unit.fingerprint, path=unit.part,
                       sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), count=len(keys),
                       first_key=min(keys, default=None), last_key=max(keys, default=None),
                       counts={"ok": len(keys), "rejected": 0, "error": errors},
                       seconds=round(time.perf_counter() - started, 4))
