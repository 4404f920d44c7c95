"""Shared pieces of the benchmark metrics: the true class of a sample in the model's
label space, top-1 predictions, error rates and the ranking scores (ROC AUC, AP)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from stages.adversarial.models import GENERIC_LABEL


def target_index(label: Any, meta: dict[str, Any] | None, model_labels: list[str]) -> int | None:
    """The model's index of the sample's true class, or None when the sample has no single class.

    When the sample names its class (`meta.class_name`, as the folder and prompts sources
    record, or `meta.class_names[label]`) and the model's labels are names, the name is
    looked up among the model's labels (a class the model does not know is not scored).
    Otherwise an integer label is an index into the model's logits. A list holding one
    int is that int (MedMNIST); longer lists (multi-label) have no single class.
    """
    if isinstance(label, list):
        label = label[0] if len(label) == 1 else None
    if isinstance(label, bool) or label is None:
        return None
    if isinstance(label, str):
        return model_labels.index(label) if label in model_labels else None
    name = class_name(int(label), meta or {})
    if name is not None and not any(GENERIC_LABEL.match(str(x)) for x in model_labels):
        return model_labels.index(name) if name in model_labels else None
    return int(label)


def class_name(label: int, meta: dict[str, Any]) -> str | None:
    names = meta.get("class_names")
    if isinstance(names, list) and 0 <= label < len(names):
        return str(names[label])
    return str(meta["class_name"]) if meta.get("class_name") is not None else None


def top1(row: dict[str, Any]) -> int:
    return int(row["topk_index"][0])


def error_rate(rows: Iterable[dict[str, Any]]) -> float | None:
    """Top-1 error over rows with a target; None when there are none."""
    flags = [top1(r) != r["target"] for r in rows if r["target"] is not None]
    return float(np.mean(flags)) if flags else None


def accuracy(rows: Iterable[dict[str, Any]]) -> float | None:
    error = error_rate(rows)
    return None if error is None else 1.0 - error


def class_probability(row: dict[str, Any], index: int) -> float:
    """The stored probability of class `index` (0 when it fell outside the top k)."""
    for i, p in zip(row["topk_index"], row["topk_score"]):
        if int(i) == index:
            return float(p)
    return 0.0


def roc_auc(y_true: list[int], score: list[float]) -> float | None:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties count ½."""
    y, s = np.asarray(y_true, dtype=bool), np.asarray(score, dtype=float)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def average_precision(y_true: list[int], score: list[float]) -> float | None:
    """AP = Σ_n (R_n − R_{n−1}) P_n over distinct score thresholds, highest first
    (the step-wise definition, no interpolation)."""
    y, s = np.asarray(y_true, dtype=bool), np.asarray(score, dtype=float)
    if not y.any():
        return None
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_threshold = np.r_[np.diff(s) != 0, True]
    tp = np.cumsum(y)[last_of_threshold]
    seen = (np.arange(len(y)) + 1)[last_of_threshold]
    precision, recall = tp / seen, tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_or_none(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None
