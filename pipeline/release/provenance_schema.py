"""JSON Schema of provenance.json, from a pydantic model of the document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ReleaseInfo(_Open):
    name: str
    version: str
    license: str
    description: str
    seed: int


class CodeInfo(_Open):
    shiftforge: str
    git_commit: str | None
    python: str
    packages: dict[str, str]


class SourceInfo(_Open):
    describe: dict[str, Any]
    items: int
    index_sha256: str


class StageFingerprint(_Open):
    name: str
    version: str
    params: dict[str, Any]
    weights: dict[str, str]


class ConfigInfo(_Open):
    stage: str
    shift_index: int
    params: dict[str, Any]
    shards: list[str]
    counts: dict[str, int]


class ShardInfo(_Open):
    shard_id: str
    config: str
    fingerprint: str
    path: str | None
    sha256: str | None
    bytes: int
    count: int
    first_key: str | None
    last_key: str | None
    counts: dict[str, int]
    seconds: float
    zarr: dict[str, Any] | None


class Counts(_Open):
    total: int
    ok: int
    rejected: int
    error: int


class Provenance(_Open):
    schema_: str
    release: ReleaseInfo
    manifest: dict[str, Any]
    manifest_sha256: str
    code: CodeInfo
    source: SourceInfo
    stages: list[StageFingerprint]
    filters: dict[str, Any] | None
    configs: dict[str, ConfigInfo]
    shards: list[ShardInfo]
    counts: Counts
    zarr: list[str]
    zarr_regions: list[dict[str, Any]] = []
    extras: dict[str, Any]
    shards_digest: str
    revision: int


def provenance_schema() -> dict[str, Any]:
    schema = Provenance.model_json_schema()
    schema["properties"]["schema"] = schema["properties"].pop("schema_")
    schema["required"] = ["schema" if r == "schema_" else r for r in schema["required"]]
    schema["title"] = "shiftforge provenance.json"
    return schema


def validate_provenance(doc: dict[str, Any]) -> Provenance:
    return Provenance.model_validate({**doc, "schema_": doc["schema"]})


def export_provenance_schema(out_dir: str | Path) -> Path:
    out = Path(out_dir) / "provenance.schema.json"
    out.write_text(json.dumps(provenance_schema(), indent=2) + "\n")
    return out
