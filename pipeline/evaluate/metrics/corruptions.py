"""Common-corruption metrics: ImageNet-C (Hendrycks & Dietterich 2019) and MedMNIST-C
(Di Salvo et al. 2024), both normalised by a baseline model's results.

ImageNet-C: E_{s,c} = top-1 error at severity s of corruption c;
CE_c = Σ_s E_{s,c} / Σ_s E^base_{s,c}; mCE = mean_c CE_c over the 15 common
corruptions present (the 4 extra ones get a CE but, as in the paper, stay out of
the mean); relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^base_{s,c} − E^base_clean).

MedMNIST-C (medmnistc-api `Evaluator`): BE_{s,c} = 1 − balanced accuracy (mean recall
over the classes present in the labels; binary tasks threshold the probability of
the last class at 0.5, multi-class tasks take the argmax); BE_c = mean_s BE_{s,c} /
mean_s BE^base_{s,c}; rBE_c = (mean_s BE_{s,c} − BE_clean) / (mean_s BE^base_{s,c} −
BE^base_clean); BE and rBE are the means over corruptions. The official code
normalises by AlexNet's stored figures; here the baseline is any evaluated model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.evaluate.metrics.common import class_probability, error_rate, mean_or_none, top1

COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)


def is_clean(row: dict[str, Any]) -> bool:
    """A clean reference sample: config `clean` or severity 0."""
    return row["config"] == "clean" or (row["shift"] or {}).get("severity") == 0


def _by_corruption(rows: list[dict[str, Any]]) -> dict[str, dict[int, list[dict[str, Any]]]]:
    grid: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        shift = row["shift"] or {}
        if "corruption" in shift and shift.get("severity"):
            grid[shift["corruption"]][int(shift["severity"])].append(row)
    return grid


def imagenet_c(rows: list[dict[str, Any]], clean_rows: list[dict[str, Any]],
               baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    grid = _by_corruption(rows)
    if not grid:
        return None
    errors = {c: {str(s): error_rate(grid[c][s]) for s in sorted(grid[c])} for c in sorted(grid)}
    result: dict[str, Any] = {"errors": errors, "clean_error": error_rate(clean_rows),
                              "labelled": sum(r["target"] is not None for r in rows)}
    if baseline is not None:
        result |= normalise_imagenet_c(errors, result["clean_error"], baseline["errors"],
                                       baseline.get("clean_error"))
    return result


def normalise_imagenet_c(errors: dict[str, dict[str, float | None]], clean: float | None,
                         base_errors: dict[str, dict[str, float | None]],
                         base_clean: float | None) -> dict[str, Any]:
    ce, relative = {}, {}
    for corruption, by_severity in errors.items():
        base = base_errors.get(corruption, {})
        severities = [s for s in by_severity if by_severity[s] is not None and base.get(s) is not None]
        if not severities:
            continue
        ours, theirs = sum(by_severity[s] for s in severities), sum(base[s] for s in severities)
        ce[corruption] = ours / theirs if theirs else None
        if clean is not None and base_clean is not None:
            denominator = theirs - len(severities) * base_clean
            relative[corruption] = (ours - len(severities) * clean) / denominator if denominator else None
    over = [c for c in ce if c in COMMON_CORRUPTIONS] or list(ce)
    return {"ce": ce, "mce": mean_or_none(ce[c] for c in over), "relative_ce": relative,
            "relative_mce": mean_or_none(relative.get(c) for c in over) if relative else None,
            "mce_over": over}


def balanced_error(rows: list[dict[str, Any]], n_classes: int, threshold: float = 0.5,
                   multilabel: bool = False) -> float | None:
    """1 − balanced accuracy; binary models threshold P(last class), others take the argmax;
    multi-label models: 1 − the mean over labels of each label's balanced accuracy at P > threshold."""
    if multilabel:
        return _multilabel_balanced_error(rows, n_classes, threshold)
    rows = [r for r in rows if r["target"] is not None]
    if not rows:
        return None
    truth = np.array([r["target"] for r in rows])
    if n_classes == 2:
        predicted = np.array([int(class_probability(r, 1) > threshold) for r in rows])
    else:
        predicted = np.array([top1(r) for r in rows])
    return float(1.0 - _balanced_accuracy(truth, predicted))


def _balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in `truth` (others have no recall to average)."""
    return float(np.mean([np.mean(predicted[truth == c] == c) for c in np.unique(truth)]))


def _multilabel_balanced_error(rows: list[dict[str, Any]], n_labels: int, threshold: float) -> float | None:
    rows = [r for r in rows if isinstance(r["label"], list) and len(r["label"]) == n_labels]
    if not rows:
        return None
    truth = np.array([r["label"] for r in rows], dtype=int)
    scores = np.array([[class_probability(r, i) for i in range(n_labels)] for r in rows])
    predicted = (scores > threshold).astype(int)
    return float(1.0 - np.mean([_balanced_accuracy(truth[:, i], predicted[:, i]) for i in range(n_labels)]))


def medmnist_c(rows: list[dict[str, Any]], clean_rows: list[dict[str, Any]], n_classes: int,
               baseline: dict[str, Any] | None, multilabel: bool = False) -> dict[str, Any] | None:
    datasets = sorted({(r["shift"] or {}).get("dataset") for r in rows} - {None})
    if not datasets:
        return None
    out = {}
    for dataset in datasets:
        mine = [r for r in rows if r["shift"].get("dataset") == dataset]
        grid = _by_corruption(mine)
        errors = {c: {str(s): balanced_error(grid[c][s], n_classes, multilabel=multilabel) for s in sorted(grid[c])}
                  for c in sorted(grid)}
        clean = [r for r in clean_rows if (r["shift"] or {}).get("dataset") in (dataset, None)]
        entry = {"balanced_errors": errors,
                 "clean_balanced_error": balanced_error(clean, n_classes, multilabel=multilabel)}
        if baseline is not None and dataset in baseline:
            entry |= normalise_medmnist_c(errors, entry["clean_balanced_error"], baseline[dataset]["balanced_errors"],
                                          baseline[dataset].get("clean_balanced_error"))
        out[dataset] = entry
    return out


def normalise_medmnist_c(errors: dict[str, dict[str, float | None]], clean: float | None,
                         base_errors: dict[str, dict[str, float | None]],
                         base_clean: float | None) -> dict[str, Any]:
    be, rbe = {}, {}
    for corruption, by_severity in errors.items():
        base = base_errors.get(corruption, {})
        severities = [s for s in by_severity if by_severity[s] is not None and base.get(s) is not None]
        if not severities:
            continue
        ours = float(np.mean([by_severity[s] for s in severities]))
        theirs = float(np.mean([base[s] for s in severities]))
        be[corruption] = ours / theirs if theirs else None
        if clean is not None and base_clean is not None:
            rbe[corruption] = (ours - clean) / (theirs - base_clean) if theirs != base_clean else None
    return {"be": be, "mean_be": mean_or_none(be.values()), "rbe": rbe,
            "mean_rbe": mean_or_none(rbe.values()) if rbe else None}
