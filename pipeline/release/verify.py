"""`verify`: check a release folder, file by file, against what its provenance.json says.

Every problem is one line that names the file. What is checked:

1. provenance.json: valid JSON with every field of the provenance schema; its
   `document_sha256` matches its content (so an edited license or manifest shows),
   `manifest_sha256` matches the manifest it records, and the `release` block
   agrees with that manifest.
2. every listed shard: present, the recorded sha256, a readable tar whose
   samples (keys) number `count`, and exactly the keys that samples.parquet
   lists as `ok` in that shard.
3. nothing under data/ that provenance does not list: no stray tar, no folder
   of a config the release does not have, no other file.
4. Zarr: every store provenance lists exists; each region's digest (images,
   labels, keys, valid) is recomputed where provenance records one; the `valid`
   mask is true exactly for the slots whose row in samples.parquet is `ok`.
5. samples.parquet: readable; total and per-status row counts equal provenance's
   counts, overall and per config; no duplicate (config, key); an `ok` row's shard
   is a listed shard.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.writers.files import ReleaseStore

STATUSES = ("ok", "rejected", "error")
ROW_COLUMNS = ["key", "config", "status", "shard"]


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)   # shard path -> the sha256 verify computed

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.problems.append(problem.replace("\n", " "))


def document_sha256(doc: dict[str, Any]) -> str:
    """sha256 of provenance.json's content without its own `document_sha256` field."""
    from pipeline.core.manifest import canonical_json

    body = {k: v for k, v in doc.items() if k != "document_sha256"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def verify_release(out: str | Path) -> VerifyReport:
    """`out`: a release folder or any fsspec URL (s3://…, file://…, memory://…)."""
    store = ReleaseStore(out)
    report = VerifyReport()
    prov = _read_provenance(store, report)
    if prov is None:
        return report
    _check_document(prov, report)
    rows = _read_rows(store, report)
    ok_keys = _ok_keys_by_shard(rows)
    for shard in prov["shards"]:
        report.shards += 1
        if shard.get("path"):
            _check_shard(store, shard, None if ok_keys is None else ok_keys.get(shard["path"], set()), report)
    _check_data_folder(store, prov, report)
    from pipeline.release.verify_zarr import check_zarr

    check_zarr(store, prov, rows, report)
    if rows is not None:
        _check_rows(prov, rows, report)
    return report


def _read_provenance(store: ReleaseStore, report: VerifyReport) -> dict | None:
    from pydantic import ValidationError

    from pipeline.release.provenance_schema import validate_provenance

    name = store.url("provenance.json")
    if not store.exists("provenance.json"):
        report.add(f"{name}: missing (not a finished release?)")
        return None
    try:
        prov = json.loads(store.read_text("provenance.json"))
        if not isinstance(prov, dict) or "schema" not in prov:
            raise ValueError("not a provenance document")
        validate_provenance(prov)
    except (ValueError, UnicodeDecodeError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        why = (f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first
               else str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        report.add(f"{name}: invalid ({why})")
        return None
    return prov


def _check_document(prov: dict, report: VerifyReport) -> None:
    from pipeline.core.manifest import canonical_json

    recorded = prov.get("document_sha256")
    if recorded is None:
        report.add("provenance.json: no document_sha256 (written by an older shiftforge; rebuild to add it)")
    elif recorded != document_sha256(prov):
        report.add("provenance.json: content does not match its document_sha256 (edited after the build)")
    manifest_digest = hashlib.sha256(canonical_json(prov["manifest"]).encode()).hexdigest()
    if manifest_digest != prov["manifest_sha256"]:
        report.add("provenance.json: manifest does not match manifest_sha256")
    for name in ("name", "version", "license", "description", "seed"):
        if prov["release"].get(name) != prov["manifest"].get(name):
            report.add(f"provenance.json: release.{name} {prov['release'].get(name)!r} != manifest.{name} "
                       f"{prov['manifest'].get(name)!r}")


def _read_rows(store: ReleaseStore, report: VerifyReport) -> list[dict] | None:
    name = store.url("samples.parquet")
    if not store.exists("samples.parquet"):
        report.add(f"{name}: missing")
        return None
    try:
        return store.read_table("samples.parquet", columns=ROW_COLUMNS).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any unreadable Parquet is one problem line
        report.add(f"{name}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return None


def _ok_keys_by_shard(rows: list[dict] | None) -> dict[str, set[str]] | None:
    if rows is None:
        return None
    by_shard: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["status"] == "ok" and row["shard"]:
            by_shard[row["shard"]].add(row["key"])
    return by_shard


def _check_shard(store: ReleaseStore, shard: dict, ok_keys: set[str] | None, report: VerifyReport) -> None:
    rel = shard["path"]
    if not store.exists(rel):
        report.add(f"{rel}: missing")
        return
    try:
        digest = store.sha256(rel)
    except OSError as exc:
        report.add(f"{rel}: unreadable ({type(exc).__name__}: {exc})")
        return
    report.hashes[rel] = digest
    if digest != shard["sha256"]:
        report.add(f"{rel}: sha256 {digest[:12]}… != recorded {(shard['sha256'] or '')[:12]}…")
        return
    try:
        with store.open(rel) as handle, tarfile.open(fileobj=handle) as tar:
            keys = {m.name.split(".", 1)[0] for m in tar.getmembers()}
    except (tarfile.TarError, OSError) as exc:
        report.add(f"{rel}: not a readable tar ({exc})")
        return
    report.samples += len(keys)
    if len(keys) != shard["count"]:
        report.add(f"{rel}: {len(keys)} samples, provenance says {shard['count']}")
    if ok_keys is not None and keys != ok_keys:
        extra, absent = sorted(keys - ok_keys), sorted(ok_keys - keys)
        report.add(f"{rel}: holds {len(extra)} key(s) samples.parquet does not place here"
                   f"{' (' + extra[0] + ', …)' if extra else ''} and lacks {len(absent)} it does"
                   f"{' (' + absent[0] + ', …)' if absent else ''}")


def _check_data_folder(store: ReleaseStore, prov: dict, report: VerifyReport) -> None:
    if not store.exists("data"):
        return
    listed = {s["path"] for s in prov["shards"] if s.get("path")}
    configs = set(prov["configs"])
    for path in store.glob("data/**"):
        parts = path.split("/")
        if store.isdir(path):
            # object stores keep no folders of their own (memory:// keeps emptied ones): files tell there
            if store.local and len(parts) == 2 and parts[1] not in configs:
                report.add(f"{path}: stray folder (no config {parts[1]!r} in provenance)")
        elif path not in listed:
            report.add(f"{path}: stray file (not a shard listed in provenance)")


def _check_rows(prov: dict, rows: list[dict], report: VerifyReport) -> None:
    counts = prov["counts"]
    if counts["total"] != sum(counts[s] for s in STATUSES):
        report.add(f"provenance.json: counts do not add up: {counts}")
    if len(rows) != counts["total"]:
        report.add(f"samples.parquet: {len(rows)} rows, provenance total is {counts['total']}")
    by_status = Counter(row["status"] for row in rows)
    for status in STATUSES:
        if by_status[status] != counts[status]:
            report.add(f"samples.parquet: {by_status[status]} {status} rows, provenance says {counts[status]}")
    per_config = Counter((row["config"], row["status"]) for row in rows)
    for config, info in prov["configs"].items():
        for status in STATUSES:
            if per_config[(config, status)] != info["counts"].get(status, 0):
                report.add(f"samples.parquet: {per_config[(config, status)]} {status} rows for {config}, "
                           f"provenance says {info['counts'].get(status, 0)}")
    unknown = sorted({row["config"] for row in rows} - set(prov["configs"]))
    if unknown:
        report.add(f"samples.parquet: rows of config(s) provenance does not have: {', '.join(unknown)}")
    twice = [k for k, n in Counter((row["config"], row["key"]) for row in rows).items() if n > 1]
    if twice:
        report.add(f"samples.parquet: {len(twice)} duplicate (config, key) rows, e.g. {twice[0][1]}")
    _check_row_shards(prov, rows, report)


def _check_row_shards(prov: dict, rows: list[dict], report: VerifyReport) -> None:
    listed = {s["path"] for s in prov["shards"] if s.get("path")}
    bad = [row["key"] for row in rows if row["shard"] is not None and row["shard"] not in listed]
    if bad:
        report.add(f"samples.parquet: {len(bad)} row(s) point at a shard provenance does not list, e.g. {bad[0]}")
    if listed:
        unplaced = [row["key"] for row in rows if row["status"] == "ok" and not row["shard"]]
        if unplaced:
            report.add(f"samples.parquet: {len(unplaced)} ok row(s) without a shard, e.g. {unplaced[0]}")
    written = sum(s["count"] for s in prov["shards"] if s.get("path"))
    if listed and written != prov["counts"]["ok"]:
        report.add(f"provenance.json: shards hold {written} samples but {prov['counts']['ok']} are ok")


def stop_io_threads() -> None:
    """Stop the threads verify's readers started (zarr's event loop and codec pool). A native thread
    still running while the interpreter finalises can abort the process ("terminate called without
    an active exception", rc 134) after the report was printed. zarr starts them again on next use."""
    import sys

    sync = sys.modules.get("zarr.core.sync")
    if sync is None:
        return
    loop = sync.loop[0]
    if loop is not None and loop.is_running():
        import asyncio

        # the loop's default executor runs the codecs ("asyncio_N" threads); loop.close() would not join it
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout=30)
    sync.cleanup_resources()
