"""Detection metrics for binary (real vs generated) classifiers: ROC AUC, average precision, F1.

Written from the definitions scikit-learn documents, without it:
- AUC is the Mann–Whitney probability that a positive outranks a negative,
  ties counting one half;
- AP = Σ_n (R_n − R_{n−1}) · P_n over the distinct score thresholds taken in
  decreasing order (no interpolation);
- F1 = 2·TP / (2·TP + FP + FN) of the predicted labels, 0 when undefined.

RAID's evaluation code passes thresholded predictions (probability > 0.5) to
its AUC and AP; `detection_metrics` reports those as `auc_thresholded` and
`ap_thresholded` beside the metrics on the continuous score.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    truth, score = np.asarray(truth, bool), np.asarray(score, np.float64)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = score[order]
    start = 0
    for stop in range(1, len(score) + 1):  # average ranks over ties
        if stop == len(score) or sorted_scores[stop] != sorted_scores[start]:
            ranks[order[start:stop]] = (start + stop + 1) / 2.0
            start = stop
    rank_sum = ranks[truth].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def average_precision(truth: np.ndarray, score: np.ndarray) -> float | None:
    truth, score = np.asarray(truth, bool), np.asarray(score, np.float64)
    positives = int(truth.sum())
    if not positives:
        return None
    thresholds = np.unique(score)[::-1]
    ap, previous_recall = 0.0, 0.0
    for threshold in thresholds:
        predicted = score >= threshold
        tp = int((predicted & truth).sum())
        precision = tp / int(predicted.sum())
        recall = tp / positives
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return float(ap)


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    tp = int((truth & predicted).sum())
    denominator = 2 * tp + int((~truth & predicted).sum()) + int((truth & ~predicted).sum())
    return 2 * tp / denominator if denominator else 0.0


def detection_metrics(truth: list[bool], score: list[float], predicted: list[bool]) -> dict[str, float | None]:
    """Metrics of one detector on one set: `truth` = is positive (e.g. generated), `score` = its
    probability of the positive class, `predicted` = argmax says positive."""
    truth_a, score_a, predicted_a = np.asarray(truth, bool), np.asarray(score, float), np.asarray(predicted, bool)
    thresholded = (score_a > THRESHOLD).astype(float)
    rounded = lambda v: None if v is None else round(v, 6)  # noqa: E731
    return {
        "samples": len(truth_a), "positives": int(truth_a.sum()),
        "accuracy": rounded(float(np.mean(truth_a == predicted_a))) if len(truth_a) else None,
        "auc": rounded(roc_auc(truth_a, score_a)), "ap": rounded(average_precision(truth_a, score_a)),
        "f1": rounded(f1(truth_a, predicted_a)),
        "auc_thresholded": rounded(roc_auc(truth_a, thresholded)),
        "ap_thresholded": rounded(average_precision(truth_a, thresholded)),
    }
