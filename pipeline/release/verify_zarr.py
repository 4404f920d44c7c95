"""The Zarr part of `verify`: stores present, region digests, the `valid` mask against samples.parquet."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pipeline.writers.files import ReleaseStore


def check_zarr(store: ReleaseStore, prov: dict, rows: list[dict] | None, report: Any) -> None:
    listed = set(prov.get("zarr") or [])
    for path in sorted(listed):
        if not store.exists(path):
            report.add(f"{path}: missing (provenance lists this Zarr store)")
    for path in store.glob("zarr/*") if store.exists("zarr") else []:
        if path not in listed:
            report.add(f"{path}: stray (not a Zarr store listed in provenance)")
    present = {p for p in listed if store.exists(p)}
    groups = {p: _open(store, p, report) for p in sorted(present)}
    # a filtered release packs its final shards anew; its tasks' regions are listed on their own
    regions = [s.get("zarr") for s in prov["shards"]] + list(prov.get("zarr_regions") or [])
    for region in regions:
        if region and region.get("digest") and groups.get(region["path"]) is not None:
            _check_region(groups[region["path"]], region, report)
    if rows is not None:
        status = defaultdict(dict)
        for row in rows:
            status[row["config"]][row["key"]] = row["status"]
        for path, group in groups.items():
            if group is not None:
                config = path.removeprefix("zarr/").removesuffix(".zarr")
                _check_valid_mask(path, group, status.get(config, {}), report)


def _open(store: ReleaseStore, path: str, report: Any) -> Any:
    import zarr

    try:
        group = zarr.open_group(store.url(path), mode="r")
        for name in ("images", "labels", "keys", "valid"):
            group[name]  # noqa: B018 - a missing array is a problem of this store
        return group
    except Exception as exc:  # noqa: BLE001 - an unreadable store is one problem line
        report.add(f"{path}: unreadable Zarr store ({_short(exc)})")
        return None


def _check_region(group: Any, region: dict, report: Any) -> None:
    from pipeline.writers.zarr_store import region_digest

    start, stop = region["start"], region["stop"]
    where = f"{region['path']} [{start}:{stop}]"
    try:
        digest = region_digest(group["images"][start:stop], group["labels"][start:stop], group["keys"][start:stop])
    except Exception as exc:  # noqa: BLE001 - a corrupt chunk is one problem line
        report.add(f"{where}: unreadable ({_short(exc)})")
        return
    if digest != region["digest"]:
        report.add(f"{where}: digest {digest[:12]}… != recorded {region['digest'][:12]}… (images, labels "
                   "or keys changed)")


def _check_valid_mask(path: str, group: Any, status: dict[str, str], report: Any) -> None:
    try:
        keys, valid = group["keys"][:], group["valid"][:]
    except Exception as exc:  # noqa: BLE001
        report.add(f"{path}: unreadable keys/valid ({_short(exc)})")
        return
    for i, (key, is_valid) in enumerate(zip(keys.tolist(), valid.tolist(), strict=True)):
        if not key:
            if is_valid:
                report.add(f"{path}: slot {i} has no key but valid is true")
                return
            continue
        wanted = status.get(key)
        if wanted is None:
            report.add(f"{path}: slot {i} key {key!r} has no row in samples.parquet")
            return
        if bool(is_valid) != (wanted == "ok"):
            report.add(f"{path}: slot {i} ({key}) valid={bool(is_valid)} but its row's status is {wanted!r}")
            return


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]
