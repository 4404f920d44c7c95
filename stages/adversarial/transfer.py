"""Per-model, per-budget success rates from the per-sample rows of a release.

Only samples that made it into the release (status "ok") count; a rate is
None when no sample qualifies, never a misleading 0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any


def transfer_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{"configs": {config: {budget, counts, "surrogates": {name: rates}, "held_out": {name: rates}}}}.

    Rates per model: clean_accuracy, adversarial_accuracy, success_rate (fooled,
    or hit the target, over all samples) and success_rate_clean_correct (over
    the samples the model classified correctly before the attack).
    """
    per_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    statuses: dict[str, dict[str, int]] = defaultdict(lambda: {"ok": 0, "rejected": 0, "error": 0})
    for row in rows:
        shift = row.get("shift") or {}
        if isinstance(shift, str):
            shift = json.loads(shift)
        config = row.get("config") or shift.get("config")
        status = row.get("status", "ok")
        statuses[config][status] = statuses[config].get(status, 0) + 1
        if status == "ok" and "on_surrogates" in shift:
            per_config[config].append(shift)
    configs = {}
    for config in sorted(statuses):
        shifts = per_config.get(config, [])
        first = shifts[0] if shifts else {}
        configs[config] = {
            "norm": first.get("norm"), "epsilon": first.get("epsilon"),
            "epsilon_unit": first.get("epsilon_unit"), "epsilon_pixel": first.get("epsilon_pixel"),
            "counts": statuses[config],
            "mean_achieved_linf": _mean([s["achieved_linf"] for s in shifts]),
            "mean_achieved_l2": _mean([s["achieved_l2"] for s in shifts]),
            "surrogates": _rates(shifts, "on_surrogates"),
            "held_out": _rates(shifts, "on_held_out"),
        }
    return {"configs": configs}


def _rates(shifts: list[dict[str, Any]], role: str) -> dict[str, dict[str, Any]]:
    names = sorted({name for s in shifts for name in s.get(role, {})})
    out = {}
    for name in names:
        results = [(s["label_index"], s[role][name]) for s in shifts if name in s.get(role, {})]
        clean_correct = [r for label, r in results if r["clean"] == label]
        out[name] = {
            "samples": len(results),
            "clean_accuracy": _mean([r["clean"] == label for label, r in results]),
            "adversarial_accuracy": _mean([r["adversarial"] == label for label, r in results]),
            "success_rate": _mean([r["success"] for _, r in results]),
            "success_rate_clean_correct": _mean([r["success"] for r in clean_correct]),
        }
    return out


def _mean(values: list[Any]) -> float | None:
    return round(sum(float(v) for v in values) / len(values), 6) if values else None
