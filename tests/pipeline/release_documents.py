"""A schema-complete, sealed provenance.json for hand-made test releases (they must pass `verify`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.core.manifest import canonical_json
from pipeline.release.verify import document_sha256


def sealed_provenance(release: dict[str, Any], shards: list[dict[str, Any]], rows: list[dict[str, Any]],
                      revision: int = 1, hub: dict[str, Any] | None = None) -> str:
    """provenance.json text for `shards` (shard_id, path, sha256, bytes, count) and samples.parquet `rows`
    (key, config, status, shard); `release`: name, version, license."""
    release = {"description": "", "seed": 0, **release}
    manifest = {**release, "hub": hub or {}}
    counts = {status: sum(r["status"] == status for r in rows) for status in ("ok", "rejected", "error")}
    configs: dict[str, Any] = {}
    for row in rows:
        entry = configs.setdefault(row["config"], {"stage": "test", "shift_index": 0, "params": {}, "shards": [],
                                                   "counts": {"ok": 0, "rejected": 0, "error": 0}})
        entry["counts"][row["status"]] += 1
    full_shards = []
    for shard in shards:
        config = shard["shard_id"].split("/")[0]
        configs[config]["shards"].append(shard["path"])
        keys = sorted(r["key"] for r in rows if r["shard"] == shard["path"])
        full_shards.append({"config": config, "fingerprint": "0" * 64, "first_key": keys[0] if keys else None,
                            "last_key": keys[-1] if keys else None, "counts": {"ok": shard["count"]},
                            "seconds": 0.0, "zarr": None, **shard})
    doc = {"schema": "shiftforge/provenance/1", "release": release, "manifest": manifest,
           "manifest_sha256": hashlib.sha256(canonical_json(manifest).encode()).hexdigest(),
           "code": {"shiftforge": "0", "git_commit": None, "python": "3", "packages": {}},
           "source": {"describe": {}, "items": len(rows), "index_sha256": "0" * 64}, "stages": [],
           "filters": None, "configs": configs, "shards": full_shards, "counts": {"total": len(rows), **counts},
           "zarr": [], "extras": {}, "files": [], "shards_digest": "0" * 64, "revision": revision}
    doc["document_sha256"] = document_sha256(doc)
    return json.dumps(doc, indent=2)
