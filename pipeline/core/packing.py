"""The second pass of a filtered release: release-wide rules, then even shards.

With filters, each work unit writes its accepted samples to a staging tar
`.staging/<config>/unit-NNNNN.tar` (journaled and resumed exactly like a
shard). Then the driver:

1. applies the release-wide rules (`stages.filters.release`: dedup across all
   units of a config, complete trajectories) to the journal rows — no pixels;
   those samples turn `rejected` in samples.parquet (the journal keeps what
   the tasks reported, so the decision is recomputed on every build);
2. packs the accepted samples of each config, in source order, into final
   shards `data/<config>/test-NNNNN.tar` of exactly `samples_per_shard`
   samples (the last one fewer), one Dask task per shard. Members are copied
   from the staging tars byte for byte, headers included, so nothing is
   re-encoded. A pack's fingerprint hashes the staging tars' sha256s and the
   keys it takes, so an unchanged release re-packs nothing;
3. Zarr keeps the per-unit regions written by the tasks; the driver rewrites
   only the `valid` mask so that it is true exactly for the accepted samples.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import zarr

from pipeline.core.journal import shard_is_done
from pipeline.core.manifest import canonical_json
from pipeline.core.records import ShardRecord
from pipeline.writers.files import ReleaseStore, atomic_write, filesystem
from pipeline.writers.zarr_store import ZarrLayout
from stages.filters.release import release_rejections

STAGING = ".staging"
PACK_JOURNAL = f"{STAGING}/packs.jsonl"


def staging_tar(shard_id: str) -> str:
    """`<config>/test-00003` -> `.staging/<config>/unit-00003.tar`."""
    config, name = shard_id.split("/")
    return f"{STAGING}/{config}/unit-{name.removeprefix('test-')}.tar"


@dataclass(frozen=True)
class Pack:
    """One final shard: the keys it takes from each staging tar, in source order."""

    shard_id: str                                           # "<config>/test-00000"
    config: str
    takes: tuple[tuple[str, str, tuple[str, ...]], ...]     # (staging tar, its sha256, keys)
    fingerprint: str

    @property
    def path(self) -> str:
        return f"data/{self.shard_id}.tar"


@dataclass
class Packed:
    records: list[ShardRecord]      # unit records with the final statuses, reasons and shard paths
    shards: list[ShardRecord]       # the final shards
    built: int = 0
    removed: list[str] = field(default_factory=list)


def apply_release_rules(records: list[ShardRecord], spec: Any) -> list[ShardRecord]:
    """Copies of the unit records with the release-wide rejections applied, counts recomputed."""
    rows = [[dict(row) for row in record.rows] for record in records]
    by_config: dict[str, list[dict[str, Any]]] = {}
    for record, record_rows in zip(records, rows):
        by_config.setdefault(record.config, []).extend(record_rows)
    for config_rows in by_config.values():
        for i, reason in release_rejections(config_rows, spec).items():
            config_rows[i].update(status="rejected", reason=reason, shard=None)
    decided = []
    for record, record_rows in zip(records, rows):
        counts = {"ok": 0, "rejected": 0, "error": 0}
        for row in record_rows:
            counts[row["status"]] += 1
        decided.append(replace(record, rows=record_rows, counts=counts))
    return decided


def plan_packs(records: list[ShardRecord], per_shard: int | dict[str, int]) -> list[Pack]:
    """Accepted samples of each config, in source order, cut into shards of `per_shard`
    (one size for all configs, or a size per config)."""
    taken: dict[str, list[tuple[str, str, str]]] = {}
    for record in records:
        if record.path is None:
            continue
        taken.setdefault(record.config, []).extend(
            (record.path, record.sha256, row["key"]) for row in record.rows if row["status"] == "ok")
    packs = []
    for config, samples in taken.items():
        size = per_shard[config] if isinstance(per_shard, dict) else per_shard
        for index, start in enumerate(range(0, len(samples), size)):
            chunk = samples[start:start + size]
            takes: dict[tuple[str, str], list[str]] = {}
            for tar, sha, key in chunk:
                takes.setdefault((tar, sha), []).append(key)
            spec = tuple((tar, sha, tuple(keys)) for (tar, sha), keys in takes.items())
            packs.append(Pack(shard_id=f"{config}/test-{index:05d}", config=config, takes=spec,
                              fingerprint=hashlib.sha256(canonical_json(spec).encode()).hexdigest()))
    return packs


def pack_shard(pack: Pack, out: str) -> ShardRecord:
    """Copy the pack's samples out of the staging tars into one final tar, atomically."""
    started = time.perf_counter()
    fs, root = filesystem(out)
    buffer = io.BytesIO()
    keys: list[str] = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as dest:
        for tar_rel, _, wanted in pack.takes:
            with fs.open(f"{root}/{tar_rel}", "rb") as handle, tarfile.open(fileobj=handle) as src:
                members: dict[str, list[tarfile.TarInfo]] = {key: [] for key in wanted}
                for info in src.getmembers():
                    members.get(info.name.split(".", 1)[0], []).append(info)
                for key in wanted:
                    if not members[key]:
                        raise ValueError(f"{tar_rel} has no members for {key}; expected the staged sample")
                    for info in members[key]:
                        dest.addfile(info, src.extractfile(info))
            keys.extend(wanted)
    payload = buffer.getvalue()
    atomic_write(fs, f"{root}/{pack.path}", payload)
    return ShardRecord(
        shard_id=pack.shard_id, config=pack.config, fingerprint=pack.fingerprint, path=pack.path,
        sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload), count=len(keys),
        first_key=keys[0] if keys else None, last_key=keys[-1] if keys else None, counts={"ok": len(keys)},
        seconds=round(time.perf_counter() - started, 4))


def read_pack_journal(store: ReleaseStore) -> dict[str, ShardRecord]:
    if not store.exists(PACK_JOURNAL):
        return {}
    records = {}
    for line in store.read_text(PACK_JOURNAL).splitlines():
        try:
            record = ShardRecord.from_json(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue      # a torn last line of a killed build
        records[record.shard_id] = record
    return records


def pack_release(store: ReleaseStore, release: Any, records: list[ShardRecord], layouts: dict[str, ZarrLayout],
                 per_shard: dict[str, int],
                 run_packs: Callable[[list[Pack], Callable[[ShardRecord], None]], None]) -> Packed:
    """Decide, pack what changed (`run_packs(todo, on_done)` runs `pack_shard` on Dask), drop orphans."""
    decided = apply_release_rules(records, release.filters)
    packs = plan_packs(decided, per_shard)
    journal = read_pack_journal(store)
    todo = [p for p in packs if not shard_is_done(journal.get(p.shard_id), p, store)]
    if todo:
        store.append_line(PACK_JOURNAL, "")       # end a torn line before appending

        def done(record: ShardRecord) -> None:
            store.append_line(PACK_JOURNAL, json.dumps(record.to_json(), sort_keys=True))
            journal[record.shard_id] = record

        run_packs(todo, done)
    shards = [journal[p.shard_id] for p in packs]
    store.write_atomic(PACK_JOURNAL, "".join(json.dumps(s.to_json(), sort_keys=True) + "\n" for s in shards).encode())
    removed = _remove_orphan_packs(store, {p.path for p in packs})
    final = _point_rows_at_packs(decided, packs)
    _mask_zarr(layouts, final)
    return Packed(records=final, shards=shards, built=len(todo), removed=removed)


def _point_rows_at_packs(records: list[ShardRecord], packs: list[Pack]) -> list[ShardRecord]:
    """Rows' `shard` -> the final shard; the staging tar leaves the records (it is not part of the release)."""
    shard_of = {(p.config, key): p.path for p in packs for _, _, keys in p.takes for key in keys}
    final = []
    for record in records:
        rows = [{**row, "shard": shard_of.get((record.config, row["key"]))} for row in record.rows]
        final.append(replace(record, rows=rows, path=None, sha256=None, bytes=0, count=0,
                             first_key=None, last_key=None))
    return final


def _remove_orphan_packs(store: ReleaseStore, kept: set[str]) -> list[str]:
    removed = []
    for tar in store.glob("data/*/*.tar"):
        if tar not in kept:
            store.rm(tar)
            removed.append(tar[len("data/"): -len(".tar")])
    if store.exists("data"):
        store.remove_empty_folders("data")
    return removed


def _mask_zarr(layouts: dict[str, ZarrLayout], records: list[ShardRecord]) -> None:
    """`valid` true exactly for the accepted samples (a release-wide rule may reject a sample
    its task wrote as valid, or accept again one an earlier build rejected)."""
    for config, layout in layouts.items():
        accepted = {row["key"] for r in records if r.config == config for row in r.rows if row["status"] == "ok"}
        group = zarr.open_group(layout.path, mode="r+")
        valid = group["valid"][:]
        wanted = np.array([key in accepted for key in group["keys"][:]], dtype=bool)
        if (wanted != valid).any():
            group["valid"][:] = wanted
