"""Records that cross the driver/worker boundary and land in the journal."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from stages.base import Variant


@dataclass(frozen=True)
class WorkUnit:
    """One Dask task = one output shard: a variant applied to a slice of the source index."""

    shard_id: str            # "<config>/test-00003"
    variant: Variant
    stage_index: int         # position of the stage in manifest.shifts
    unit_index: int          # shard number within the config
    start: int               # slice of the source index
    stop: int
    fingerprint: str
    affinity: str | None = None   # units of one group share work: run them together on one worker


@dataclass
class ShardRecord:
    """What a finished task reports; one journal line per shard."""

    shard_id: str
    config: str
    fingerprint: str
    path: str | None                     # relative tar path, None when no webdataset output
    sha256: str | None
    bytes: int
    count: int                           # samples written to the shard
    first_key: str | None
    last_key: str | None
    counts: dict[str, int]               # by status: ok / rejected / error
    seconds: float
    zarr: dict[str, Any] | None = None   # {"path", "start", "stop", "sha256"}
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # shallow: rows are plain JSON-ready dicts already; asdict's deep copy cost seconds per build
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardRecord:
        return cls(**data)
