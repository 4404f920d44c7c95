"""Shared pieces of the benchmark metrics: the true class of a sample in the model's
label space, top-1 predictions, error rates and the ranking scores (ROC AUC, AP)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def target_index(label: Any, meta: dict[str, Any] | None, model_labels: list[str]) -> int | None:
    """The model's index of the sample's true class, or None when the sample has no single class.

    An integer label is an index into the model's logits unless the sample names its
    classes (`meta.class_names`) and the model's labels are names too; then the class
    name is looked up among the model's labels. A list holding one int is that int
    (MedMNIST); longer lists (multi-label) have no single class.
    """
    if isinstance(label, list):
        label = label[0] if len(label) == 1 else None
    if isinstance(label, bool) or label is None:
        return None
    if isinstance(label, str):
        return model_labels.index(label) if label in model_labels else None
    names = (meta or {}).get("class_names")
    if names and 0 <= int(label) < len(names) and names[int(label)] in model_labels:
        return model_labels.index(names[int(label)])
    return int(label)


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
