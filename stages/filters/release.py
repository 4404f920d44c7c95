"""Release-wide rules: what one task cannot see, decided from the samples table alone.

Per-sample rules run in the task that generated the sample. Two rules need the
whole release: `dedup` (a near-duplicate may sit in another task) and
`complete_trajectory` (a trajectory could span tasks). They run on the rows of
one config in source order, read only scores/meta/shift (no pixels), and
return the rows that turn `rejected` with their reasons; rows are never dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from stages.filters.dedup import DedupParams, bits_from_hex, duplicates_of_earlier
from stages.filters.spec import FiltersSpec


def release_rejections(rows: list[dict[str, Any]], spec: FiltersSpec) -> dict[int, str]:
    """Row index -> reason for the ok rows of one config (in source order) that the
    release-wide rules reject."""
    rejected: dict[int, str] = {}
    dedup = next((entry for entry in spec.chain if isinstance(entry, DedupParams)), None)
    if dedup is not None:
        rejected.update(_duplicates(rows, dedup))
    if spec.complete_trajectory:
        rejected.update(_incomplete_trajectories(rows, rejected))
    return rejected


def _duplicates(rows: list[dict[str, Any]], params: DedupParams) -> dict[int, str]:
    """Later near-duplicates of an earlier kept sample of another trajectory / source image."""
    candidates = [(i, json.loads(row["meta"] or "{}").get("phash")) for i, row in enumerate(rows)
                  if row["status"] == "ok"]
    candidates = [(i, phash) for i, phash in candidates if phash]
    if len(candidates) < 2:
        return {}
    n_bits = params.hash_size ** 2
    bits = np.stack([bits_from_hex(phash, n_bits) for _, phash in candidates])
    groups = [_trajectory(rows[i]) or rows[i]["source_key"] for i, _ in candidates]
    found = duplicates_of_earlier(bits, groups, params.min_distance)
    return {candidates[j][0]: f"dedup_distance {distance} < {params.min_distance}: near-duplicate of "
                              f"{rows[candidates[kept][0]]['key']}"
            for j, (kept, distance) in found.items()}


def _trajectory(row: dict[str, Any]) -> str | None:
    trajectory = json.loads(row["shift"] or "{}").get("trajectory")
    return None if trajectory is None else str(trajectory)


def _incomplete_trajectories(rows: list[dict[str, Any]], rejected: dict[int, str]) -> dict[int, str]:
    """Surviving scales of every trajectory that lost a scale anywhere in the release."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        trajectory = _trajectory(row)
        if trajectory is not None:
            members[trajectory].append(i)
    found: dict[int, str] = {}
    for trajectory, indices in members.items():
        status = {i: "rejected" if i in rejected else rows[i]["status"] for i in indices}
        lost = [f"scale {json.loads(rows[i]['shift']).get('scale')} {status[i]}" for i in indices
                if status[i] != "ok"]
        if lost:
            reason = f"incomplete trajectory {trajectory}: {', '.join(lost)}"[:500]
            found.update({i: reason for i in indices if status[i] == "ok"})
    return found
