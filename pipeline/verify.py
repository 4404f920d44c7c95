"""`verify`: re-hash every shard against provenance.json and check the counts add up."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.writers.files import ReleaseStore


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_shard(store: ReleaseStore, shard: dict, report: VerifyReport) -> None:
    rel = shard["path"]
    if not store.exists(rel):
        report.problems.append(f"{rel}: missing")
        return
    digest = store.sha256(rel)
    if digest != shard["sha256"]:
        report.problems.append(f"{rel}: sha256 {digest[:12]}… != recorded {shard['sha256'][:12]}…")
        return
    with store.open(rel) as handle, tarfile.open(fileobj=handle) as tar:
        keys = {m.name.split(".", 1)[0] for m in tar.getmembers()}
    if len(keys) != shard["count"]:
        report.problems.append(f"{rel}: {len(keys)} samples, provenance says {shard['count']}")
    report.samples += len(keys)


def verify_release(out: str | Path) -> VerifyReport:
    """`out`: a release folder or any fsspec URL (s3://…, file://…, memory://…)."""
    store = ReleaseStore(out)
    report = VerifyReport()
    if not store.exists("provenance.json"):
        report.problems.append(f"{store.url('provenance.json')}: missing (not a finished release?)")
        return report
    prov = json.loads(store.read_text("provenance.json"))
    for shard in prov["shards"]:
        report.shards += 1
        if shard.get("path"):
            _check_shard(store, shard, report)
    _check_counts(store, prov, report)
    return report


def _check_counts(store: ReleaseStore, prov: dict, report: VerifyReport) -> None:
    counts = prov["counts"]
    if counts["total"] != counts["ok"] + counts["rejected"] + counts["error"]:
        report.problems.append(f"provenance counts do not add up: {counts}")
    table = store.read_table("samples.parquet", columns=["status"]).column("status").to_pylist()
    if len(table) != counts["total"]:
        report.problems.append(f"samples.parquet has {len(table)} rows, provenance total is {counts['total']}")
    for status in ("ok", "rejected", "error"):
        n = sum(1 for s in table if s == status)
        if n != counts[status]:
            report.problems.append(f"samples.parquet has {n} {status} rows, provenance says {counts[status]}")
    written = sum(s["count"] for s in prov["shards"] if s.get("path"))
    if any(s.get("path") for s in prov["shards"]) and written != counts["ok"]:
        report.problems.append(f"shards hold {written} samples but {counts['ok']} are ok")
