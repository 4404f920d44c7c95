"""Adversarial / RAID-style sets: per config (one ε each), accuracy and attack success,
beside the clean figures; for two-class detectors (real = 0, generated = 1) also ROC AUC
and AP of P(class 1).

Attack success, untargeted: among samples whose clean counterpart (config `clean`,
same source key) the model classifies correctly, the share it misclassifies after
the attack; without a clean config, 1 − accuracy. Targeted: the share predicted as
the target class.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.evaluate.metrics.common import accuracy, average_precision, class_probability, roc_auc, top1


def adversarial(rows: list[dict[str, Any]], clean_rows: list[dict[str, Any]],
                model_labels: list[str]) -> dict[str, Any] | None:
    if not rows:
        return None
    clean = {r["source_key"]: r for r in clean_rows if r["target"] is not None}
    configs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        configs[row["config"]].append(row)
    out = {name: _config_summary(members, clean, model_labels) for name, members in sorted(configs.items())}
    return {"configs": out, "clean_accuracy": accuracy(clean.values()),
            **(_ranking("clean_", list(clean.values())) if len(model_labels) == 2 else {})}


def _config_summary(rows: list[dict[str, Any]], clean: dict[str, dict[str, Any]],
                    model_labels: list[str]) -> dict[str, Any]:
    shift = rows[0]["shift"] or {}
    labelled = [r for r in rows if r["target"] is not None]
    summary = {"epsilon": shift.get("epsilon"), "norm": shift.get("norm"), "n": len(labelled),
               "accuracy": accuracy(labelled), "attack_success": _success(labelled, clean, shift.get("target"),
                                                                          model_labels)}
    if len(model_labels) == 2:
        summary |= _ranking("", labelled)
    return summary


def _success(rows: list[dict[str, Any]], clean: dict[str, dict[str, Any]], target: Any,
             model_labels: list[str]) -> float | None:
    if not rows:
        return None
    if target is not None:
        index = model_labels.index(target) if isinstance(target, str) and target in model_labels else target
        return float(np.mean([top1(r) == index for r in rows]))
    if not clean:
        return 1.0 - accuracy(rows)
    fooled = [top1(r) != r["target"] for r in rows
              if r["source_key"] in clean and top1(clean[r["source_key"]]) == clean[r["source_key"]]["target"]]
    return float(np.mean(fooled)) if fooled else None


def _ranking(prefix: str, rows: list[dict[str, Any]]) -> dict[str, float | None]:
    truth = [int(r["target"] == 1) for r in rows]
    score = [class_probability(r, 1) for r in rows]
    return {f"{prefix}auc": roc_auc(truth, score), f"{prefix}ap": average_precision(truth, score)}
