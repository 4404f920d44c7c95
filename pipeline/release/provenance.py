"""Release-level metadata: samples.parquet and provenance.json.

With only the release folder, a stranger can tell for every sample its source
(and sha256), shift and parameters, seed, model weights (sha256), code version
and filter scores: per-sample facts live in samples.parquet and each sample's
`.json` member; release-wide facts (manifest, code, weights) live here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.core.manifest import canonical_json, manifest_sha256
from pipeline.core.preparations import preparation_records
from pipeline.core.records import ShardRecord
from pipeline.core.task import filters_fingerprint
from pipeline.release.verify import document_sha256
from pipeline.writers.files import ReleaseStore

SCHEMA_ID = "shiftforge/provenance/1"
PACKAGES = ["numpy", "scipy", "opencv-python-headless", "pillow", "scikit-image", "dask", "distributed",
            "webdataset", "zarr", "pyarrow", "pydantic", "torch", "diffusers", "transformers", "peft",
            "huggingface_hub"]
ROW_SCHEMA = pa.schema([
    ("key", pa.string()), ("source_key", pa.string()), ("source_sha256", pa.string()), ("config", pa.string()),
    ("stage", pa.string()), ("shift", pa.string()), ("seed", pa.uint64()), ("label", pa.string()),
    ("status", pa.string()), ("reason", pa.string()), ("scores", pa.string()), ("meta", pa.string()),
    ("split", pa.string()), ("shard", pa.string()),
])


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the shiftforge checkout, when running from one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def code_info() -> dict[str, Any]:
    return {"shiftforge": __version__, "git_commit": git_commit(), "python": platform.python_version(),
            "packages": package_versions()}


def write_samples_table(out: str | Path, records: list[ShardRecord]) -> None:
    rows = [row for record in records for row in record.rows]
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    ReleaseStore(out).write_atomic("samples.parquet", sink.getvalue().to_pybytes())


def count_statuses(records: list[ShardRecord]) -> dict[str, int]:
    counts = {"total": 0, "ok": 0, "rejected": 0, "error": 0}
    for record in records:
        for status, n in record.counts.items():
            counts[status] = counts.get(status, 0) + n
            counts["total"] += n
    return counts


def config_summaries(plan: Any, records: list[ShardRecord], shards: list[ShardRecord] | None = None) -> dict[str, Any]:
    configs: dict[str, Any] = {}
    for stage_index, variant in plan.variants:
        configs[variant.config] = {"stage": variant.stage, "shift_index": stage_index, "params": variant.params,
                                   "shards": [], "counts": {"ok": 0, "rejected": 0, "error": 0}}
    for shard in records if shards is None else shards:
        if shard.path:
            configs[shard.config]["shards"].append(shard.path)
    for record in records:
        entry = configs[record.config]
        for status, n in record.counts.items():
            entry["counts"][status] = entry["counts"].get(status, 0) + n
    return configs


def stage_extras(plan: Any, records: list[ShardRecord]) -> dict[str, Any]:
    """Release-level summaries a stage may add (e.g. adversarial transfer rates)."""
    extras = {}
    for stage in plan.stages:
        summarise = getattr(stage, "release_summary", None)
        if summarise is not None:
            rows = [r for rec in records for r in rec.rows if r["stage"] == stage.name]
            extras[stage.name] = summarise(rows)
    return extras


def write_stage_files(out: str | Path, release: Any, plan: Any, records: list[ShardRecord],
                      previous: dict | None) -> list[dict[str, Any]]:
    """Files stages add beside the shards (e.g. COCO annotations per config), written
    atomically; files an earlier build listed that no stage writes now are deleted."""
    store = ReleaseStore(out)
    ext = "png" if release.output.encoding == "png" else "jpg"
    entries = []
    for stage_index, stage in enumerate(plan.stages):
        configs = {v.config for i, v in plan.variants if i == stage_index}
        rows = [row for record in records if record.config in configs for row in record.rows]
        for path, data in sorted(stage.release_files(rows, plan.source, ext).items()):
            parts = PurePosixPath(path).parts
            if PurePosixPath(path).is_absolute() or ".." in parts or len(parts) < 2 or parts[0] in ("data", "zarr"):
                raise ValueError(f"stage {stage.name} asked to write {path!r}; expected a relative path "
                                 "inside a folder of the release other than data/ and zarr/")
            sha = hashlib.sha256(data).hexdigest()
            if not store.exists(path) or store.sha256(path) != sha:
                store.write_atomic(path, data)
            entries.append({"path": path, "stage": stage.name, "sha256": sha, "bytes": len(data)})
    kept = {entry["path"] for entry in entries}
    for stale in [f["path"] for f in (previous or {}).get("files", []) if f["path"] not in kept]:
        if store.exists(stale):
            store.rm(stale)
        _remove_empty_parents(store, stale)
    return entries


def _remove_empty_parents(store: ReleaseStore, rel: str) -> None:
    """Local only: object stores keep no empty folders."""
    folder = PurePosixPath(rel).parent
    while store.local and str(folder) != "." and store.isdir(str(folder)) and not store.fs.ls(store.path(str(folder))):
        store.fs.rmdir(store.path(str(folder)))
        folder = folder.parent


def provenance_document(out: str | Path, release: Any, plan: Any, records: list[ShardRecord],
                        files: list[dict[str, Any]] | None = None,
                        shards: list[ShardRecord] | None = None) -> dict[str, Any]:
    """`records`: one per work unit (rows, counts, zarr regions); `shards`: the final shards when
    they are not the units' own (a filtered release packs them in a second pass)."""
    unit_entries = [{k: v for k, v in r.to_json().items() if k != "rows"} for r in records]
    shard_entries = unit_entries if shards is None else [
        {k: v for k, v in r.to_json().items() if k != "rows"} for r in shards]
    counts = count_statuses(records)
    previous = read_provenance(out)
    digest = shards_digest(shard_entries if shards is None else unit_entries + shard_entries)
    return {
        "schema": SCHEMA_ID,
        "release": {"name": release.name, "version": release.version, "license": release.license,
                    "description": release.description, "seed": release.seed},
        "manifest": release.model_dump(mode="json"),
        "manifest_sha256": manifest_sha256(release),
        "code": code_info(),
        "source": {"describe": plan.source.describe(), "items": len(plan.index), "index_sha256": plan.index.digest()},
        "stages": [stage.fingerprint() for stage in plan.stages],
        "filters": filters_fingerprint(release),
        "configs": config_summaries(plan, records, shards),
        "shards": shard_entries,
        "counts": counts,
        "zarr": sorted({r.zarr["path"] for r in records if r.zarr}),
        # a filtered release's shards are packed anew: its tasks' Zarr regions are listed here
        "zarr_regions": [] if shards is None else [r.zarr for r in records if r.zarr],
        "extras": stage_extras(plan, records),
        "preparations": preparation_records(plan.stages),
        "files": files or [],
        "shards_digest": digest,
        "revision": _revision(previous, digest),
    }


def shards_digest(shards: list[dict]) -> str:
    return hashlib.sha256(canonical_json([(s["shard_id"], s["sha256"], s.get("zarr")) for s in shards])
                          .encode()).hexdigest()


def _revision(previous: dict | None, digest: str) -> int:
    """Bumped whenever the set of shards (ids, sha256, zarr regions) changes."""
    if previous is None:
        return 1
    old = previous.get("revision", 1)
    return old if previous.get("shards_digest") == digest else old + 1


def read_provenance(out: str | Path) -> dict | None:
    store = ReleaseStore(out)
    if not store.exists("provenance.json"):
        return None
    return json.loads(store.read_text("provenance.json"))


def write_release_metadata(out: str | Path, release: Any, plan: Any, records: list[ShardRecord],
                           shards: list[ShardRecord] | None = None) -> dict[str, int]:
    write_samples_table(out, records)
    files = write_stage_files(out, release, plan, records, read_provenance(out))
    doc = provenance_document(out, release, plan, records, files, shards)
    doc["document_sha256"] = document_sha256(doc)   # `verify` notices any later edit
    ReleaseStore(out).write_atomic("provenance.json", (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    _write_cards(out)
    return doc["counts"]


def _write_cards(out: str | Path) -> None:
    """Dataset card (README.md) and Croissant metadata, derived from provenance.json."""
    from pipeline.release.card import write_dataset_card
    from pipeline.release.croissant import write_croissant

    write_dataset_card(out)
    write_croissant(out)
