"""Per-model, per-budget rates and detection metrics from the per-sample rows of a release.

Only samples that made it into the release (status "ok") count; a rate is
None when no sample qualifies, never a misleading 0. Attack rates count only
the samples that were attacked (all, unless `attack_classes` chose some).

Targeted attacks report two success rates: `success_rate` over every attacked
sample (a sample already of the target class counts when it stays there) and
`success_rate_off_target` over the attacked samples whose true class is not
the target — the honest figure.

With a `positive_class` (e.g. "fake" for AI-generated-image detectors),
every model also gets `detection` metrics (accuracy, AUC, AP, F1; see
`detection`) on the clean and on the stored images, over all samples, and per
generator (a generator's samples plus every negative sample).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from stages.adversarial.detection import detection_metrics

DEFINITIONS = {
    "samples": "attacked samples with status ok (attack_classes limits which are attacked)",
    "success_rate": "untargeted: prediction differs from the true class; targeted: prediction is the target, "
                    "over every attacked sample, including those already of the target class",
    "success_rate_off_target": "targeted only: success over the attacked samples whose true class is not the "
                               "target",
    "success_rate_clean_correct": "success over the attacked samples the model classified correctly clean",
    "detection": "with positive_class: accuracy, AUC, AP, F1 of P(positive) on clean and stored images, over all "
                 "ok samples ('all') and per generator (its samples plus every negative); *_thresholded: AUC/AP "
                 "of the 0.5-thresholded prediction, as RAID's evaluation code computes them",
}


def transfer_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{"configs": {config: {budget, counts, "surrogates": {name: rates}, "held_out": {name: rates}}}}.

    Rates per model: clean_accuracy, adversarial_accuracy, success_rate (fooled,
    or hit the target), success_rate_clean_correct (over the samples the model
    classified correctly before the attack) and, when targeted,
    success_rate_off_target.
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
    return {"definitions": DEFINITIONS,
            "configs": {config: _config_summary(per_config.get(config, []), statuses[config])
                        for config in sorted(statuses)}}


def _config_summary(shifts: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
    first = shifts[0] if shifts else {}
    attacked = [s for s in shifts if s.get("attacked", True)]
    summary = {
        "norm": first.get("norm"), "epsilon": first.get("epsilon"),
        "epsilon_unit": first.get("epsilon_unit"), "epsilon_pixel": first.get("epsilon_pixel"),
        "target_index": first.get("target_index"), "counts": counts, "attacked": len(attacked),
        "mean_achieved_linf": _mean([s["achieved_linf"] for s in attacked]),
        "mean_achieved_l2": _mean([s["achieved_l2"] for s in attacked]),
    }
    for role, key in (("surrogates", "on_surrogates"), ("held_out", "on_held_out")):
        summary[role] = _rates(attacked, key)
        if first.get("positive_index") is not None:
            for name, metrics in _detection(shifts, key, first["positive_index"]).items():
                summary[role].setdefault(name, {})["detection"] = metrics
    return summary


def _rates(shifts: list[dict[str, Any]], role: str) -> dict[str, dict[str, Any]]:
    names = sorted({name for s in shifts for name in s.get(role, {})})
    out = {}
    for name in names:
        results = [(s["label_index"], s.get("target_index"), s[role][name]) for s in shifts if name in s.get(role, {})]
        clean_correct = [r for label, _, r in results if r["clean"] == label]
        rates = {
            "samples": len(results),
            "clean_accuracy": _mean([r["clean"] == label for label, _, r in results]),
            "adversarial_accuracy": _mean([r["adversarial"] == label for label, _, r in results]),
            "success_rate": _mean([r["success"] for _, _, r in results]),
            "success_rate_clean_correct": _mean([r["success"] for r in clean_correct]),
        }
        if any(target is not None for _, target, _ in results):
            off_target = [r["success"] for label, target, r in results if label != target]
            rates["samples_off_target"] = len(off_target)
            rates["success_rate_off_target"] = _mean(off_target)
        out[name] = rates
    return out


def _detection(shifts: list[dict[str, Any]], role: str, positive: int) -> dict[str, dict[str, Any]]:
    names = sorted({name for s in shifts for name in s.get(role, {}) if "clean_probs" in s[role][name]})
    out = {}
    for name in names:
        mine = [s for s in shifts if name in s.get(role, {})]
        generators = sorted({s.get("generator") for s in mine if s["label_index"] == positive
                             and s.get("generator") is not None})
        subsets = {"all": mine}
        for generator in generators:
            subsets[generator] = [s for s in mine if s["label_index"] != positive or s.get("generator") == generator]
        out[name] = {stage: {subset: _metrics(members, role, name, positive, stage)
                             for subset, members in subsets.items()}
                     for stage in ("clean", "adversarial")}
    return out


def _metrics(shifts: list[dict[str, Any]], role: str, name: str, positive: int, stage: str) -> dict[str, Any]:
    results = [s[role][name] for s in shifts]
    return detection_metrics(truth=[s["label_index"] == positive for s in shifts],
                             score=[r[f"{stage}_probs"][positive] for r in results],
                             predicted=[r[stage] == positive for r in results])


def _mean(values: list[Any]) -> float | None:
    return round(sum(float(v) for v in values) / len(values), 6) if values else None
