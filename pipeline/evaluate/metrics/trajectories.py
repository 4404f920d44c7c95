"""CNS-Bench: accuracy versus slider scale and the failure point of each trajectory.

Only accepted samples reach the shards, and only complete trajectories count: a
trajectory whose accepted samples do not cover every scale of its variant is
left out (and counted). The failure point of a trajectory is the smallest scale
at which the top-1 prediction is not the true class, None when it never leaves it.

Per shift, as the official `EvalFilter.compute_failure_points` (CNS-Bench repository,
evaluation/metrics_computer.py): the mean and sample standard deviation (ddof 1) of the
failure points of the trajectories that fail, how many fail, the count per scale, and the
mean margin (max scale − failure point) over all trajectories with a never-failing one at
the max scale (margin 0). The official code takes max_shift = 3 as a parameter; here it
is the largest scale of the variant.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from pipeline.evaluate.metrics.common import top1


def complete_trajectories(rows: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """{trajectory: rows sorted by scale} of complete, labelled trajectories; and how many were dropped."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if "trajectory" in (row["shift"] or {}):
            groups[row["shift"]["trajectory"]].append(row)
    complete, dropped = {}, 0
    for trajectory, members in groups.items():
        expected = {float(s) for s in members[0]["shift"].get("scales", [])}
        present = {float(r["shift"]["scale"]) for r in members}
        if present != expected or len(members) != len(expected) or members[0]["target"] is None:
            dropped += 1
            continue
        complete[trajectory] = sorted(members, key=lambda r: float(r["shift"]["scale"]))
    return complete, dropped


def failure_point(members: list[dict[str, Any]]) -> float | None:
    """Smallest scale whose prediction is not the true class; None if none is."""
    for row in members:
        if top1(row) != row["target"]:
            return float(row["shift"]["scale"])
    return None


def cns_bench(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    trajectories, dropped = complete_trajectories(rows)
    if not trajectories and not dropped:
        return None
    by_shift: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for members in trajectories.values():
        by_shift[_shift_name(members[0])].append(members)
    shifts = {name: _shift_summary(groups) for name, groups in sorted(by_shift.items())}
    return {"shifts": shifts, "trajectories": len(trajectories), "incomplete_dropped": dropped}


def _shift_name(row: dict[str, Any]) -> str:
    return str(row["shift"].get("shift_name") or row["config"])


def _shift_summary(groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    correct: dict[float, list[bool]] = defaultdict(list)
    per_class: dict[str, dict[float, list[bool]]] = defaultdict(lambda: defaultdict(list))
    points: dict[str, float | None] = {}
    for members in groups:
        name = str(members[0]["shift"].get("class_name") or members[0]["target"])
        for row in members:
            hit = top1(row) == row["target"]
            correct[float(row["shift"]["scale"])].append(hit)
            per_class[name][float(row["shift"]["scale"])].append(hit)
        points[members[0]["shift"]["trajectory"]] = failure_point(members)
    found = [p for p in points.values() if p is not None]
    distribution = Counter("none" if p is None else _scale_key(p) for p in points.values())
    top = max(float(s) for s in groups[0][0]["shift"]["scales"])
    margins = [top - (top if p is None else p) for p in points.values()]
    return {
        "accuracy_by_scale": {_scale_key(s): float(np.mean(v)) for s, v in sorted(correct.items())},
        "accuracy_by_class": {c: {_scale_key(s): float(np.mean(v)) for s, v in sorted(by.items())}
                              for c, by in sorted(per_class.items())},
        "failure_points": dict(sorted(points.items())),
        "failure_point_distribution": dict(sorted(distribution.items())),
        "mean_failure_point": float(np.mean(found)) if found else None,
        "failure_point_std": float(np.std(found, ddof=1)) if len(found) > 1 else None,
        "failed": len(found),
        "mean_margin": float(np.mean(margins)),
        "never_failed": sum(p is None for p in points.values()),
    }


def _scale_key(scale: float) -> str:
    return f"{scale:g}"
