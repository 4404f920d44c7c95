"""Calibrate filter thresholds on a human-labelled set (the CNS-Bench recipe).

Input: a CSV with a `label` column (in / out, i.e. in-class or out-of-class;
also 1/0, true/false, yes/no) and, per row, either a `key` of a built release
(its scores are read from `samples.parquet`) or an `image` path (scored by the
filters of a manifest; optional columns `class_name`, `shift_name`,
`trajectory`, `scale` give what the filters need). A column named like a score
is used as that score directly.

Each score's threshold is the `target` quantile of its out-of-class values, so
the score alone removes that fraction of out-of-class images. Rates count
out-of-class as the positive class: TPR = out-of-class removed, FPR = in-class
removed, accuracy = correctly kept or removed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

IN_VALUES = {"in", "1", "true", "yes", "in-class", "in_class", "keep"}
OUT_VALUES = {"out", "0", "false", "no", "out-of-class", "out_of_class", "reject"}


class CalibrationError(ValueError):
    """The labelled set cannot be used; the message says what is missing."""


def read_labelled(path: str | Path) -> pd.DataFrame:
    """The CSV with a boolean `in_class` column added."""
    try:
        table = pd.read_csv(path, dtype={"key": str, "image": str, "label": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CalibrationError(f"cannot read labelled CSV {path}: {exc}") from None
    if "label" not in table.columns or not {"key", "image"} & set(table.columns):
        raise CalibrationError(f"{path}: expected columns `label` and `key` or `image`; "
                               f"got {list(table.columns)}")
    labels = table["label"].astype(str).str.strip().str.lower()
    unknown = sorted(set(labels) - IN_VALUES - OUT_VALUES)
    if unknown:
        raise CalibrationError(f"{path}: labels must be in/out (or 1/0, true/false); got {unknown[:5]}")
    table["in_class"] = labels.isin(IN_VALUES)
    if table["in_class"].all() or not table["in_class"].any():
        raise CalibrationError(f"{path}: need both in-class and out-of-class rows to calibrate")
    return table


def release_scores(table: pd.DataFrame, release: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """Scores of the labelled keys from a release's samples.parquet."""
    samples = pd.read_parquet(Path(release) / "samples.parquet", columns=["key", "scores"])
    by_key = dict(zip(samples["key"], samples["scores"]))
    missing = [k for k in table["key"] if k not in by_key]
    if missing:
        raise CalibrationError(f"{len(missing)} labelled key(s) are not in {release}/samples.parquet, "
                               f"e.g. {missing[:3]}")
    scores = [json.loads(by_key[k] or "{}") for k in table["key"]]
    return {name: np.array([s.get(name, np.nan) for s in scores], dtype=np.float64) for name in names}


def image_scores(table: pd.DataFrame, manifest: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """Scores of the labelled image files, computed by the manifest's filters."""
    from pipeline.core.manifest import ManifestError, load_manifest
    from pipeline.sources.imagefile import decode_image
    from stages.base import Batch
    from stages.filters import FilterChain

    release = load_manifest(manifest)
    if release.filters is None:
        raise ManifestError(f"{manifest}: has no `filters:` section to score images with")
    images = [decode_image(Path(p).read_bytes(), str(p))[0] for p in table["image"]]
    context = [c for c in ("class_name", "shift_name", "trajectory", "scale") if c in table.columns]
    shift = [{c: row[c] for c in context if pd.notna(row[c])} for _, row in table.iterrows()]
    batch = Batch(keys=[f"row{i}" for i in range(len(table))], images=images, seeds=[0] * len(table),
                  shift=shift)
    for f in FilterChain(release.filters).filters:
        f.run(batch)
    failed = [(table["image"].iloc[i], batch.reason[i]) for i in range(len(batch)) if batch.status[i] != "ok"]
    if failed:
        path, reason = failed[0]
        raise CalibrationError(f"{len(failed)} image(s) could not be scored, e.g. {path}: {reason}")
    return {name: np.array([s.get(name, np.nan) for s in batch.scores]) for name in names}


def threshold_for(out_of_class: np.ndarray, target: float) -> float:
    """The value below which `target` of the out-of-class scores lie."""
    values = out_of_class[np.isfinite(out_of_class)]
    if values.size == 0:
        raise CalibrationError("a score has no finite out-of-class values")
    return float(np.quantile(values, target))


def rates(keep: np.ndarray, in_class: np.ndarray) -> dict[str, float]:
    removed = ~keep
    return {"tpr": float(removed[~in_class].mean()), "fpr": float(removed[in_class].mean()),
            "accuracy": float((keep == in_class).mean())}


def calibrate(columns: dict[str, np.ndarray], in_class: np.ndarray, target: float, k: int) -> dict[str, Any]:
    """Thresholds, the k-of-n rule over them, and the rates of each score and of the rule."""
    from stages.filters import Rule, Threshold, keep_mask

    thresholds = {name: round(threshold_for(v[~in_class], target), 6) for name, v in columns.items()}
    rule = Rule(kind="k_of_n", k=min(k, len(columns)), of=list(columns))
    metrics = {}
    for name, values in columns.items():
        keep = np.nan_to_num(values, nan=-np.inf) >= thresholds[name]
        metrics[name] = {"threshold": thresholds[name], **rates(keep, in_class)}
    limits = {name: Threshold(min=value) for name, value in thresholds.items()}
    metrics["combined"] = {"rule": f"{rule.k} of {len(columns)}",
                           **rates(keep_mask(columns, limits, rule), in_class)}
    return {"thresholds": thresholds, "rule": rule.model_dump(), "metrics": metrics}


def write_thresholds(result: dict[str, Any], out: str | Path, source: dict[str, Any]) -> Path:
    """A file a manifest can `include:` (thresholds + rule), with how it was made."""
    document = {"thresholds": result["thresholds"], "rule": result["rule"],
                "calibration": {**source, "metrics": result["metrics"]}}
    out = Path(out)
    header = "# written by `shiftforge calibrate`; include it from a manifest's filters: section\n"
    out.write_text(header + yaml.safe_dump(document, sort_keys=False))
    return out


def format_metrics(metrics: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'score':<20} {'threshold':>10} {'TPR':>6} {'FPR':>6} {'acc':>6}"]
    for name, m in metrics.items():
        limit = m.get("threshold", m.get("rule"))
        limit = f"{limit:.4f}" if isinstance(limit, float) else str(limit)
        lines.append(f"{name:<20} {limit:>10} {m['tpr']:>6.3f} {m['fpr']:>6.3f} {m['accuracy']:>6.3f}")
    return "\n".join(lines)


def run_calibration(csv: str | Path, names: list[str], target: float, k: int, out: str | Path,
                    release: str | None = None, manifest: str | None = None) -> dict[str, Any]:
    table = read_labelled(csv)
    given = {n: table[n].to_numpy(dtype=np.float64) for n in names if n in table.columns}
    wanted = [n for n in names if n not in given]
    if wanted and release:
        if "key" not in table.columns:
            raise CalibrationError(f"{csv}: --release needs a `key` column")
        given.update(release_scores(table, release, wanted))
    elif wanted and manifest:
        if "image" not in table.columns:
            raise CalibrationError(f"{csv}: --manifest needs an `image` column")
        given.update(image_scores(table, manifest, wanted))
    elif wanted:
        raise CalibrationError(f"scores {wanted} are neither CSV columns nor computable: pass --release DIR "
                               "(rows by key) or --manifest FILE (rows by image path)")
    columns = {n: given[n] for n in names}
    in_class = table["in_class"].to_numpy()
    result = calibrate(columns, in_class, target, k)
    source = {"csv": str(csv), "csv_sha256": hashlib.sha256(Path(csv).read_bytes()).hexdigest(),
              "target_tpr": target, "in_class": int(in_class.sum()), "out_of_class": int((~in_class).sum())}
    write_thresholds(result, out, source)
    return result
