"""Each benchmark's own metric, computed from stored per-sample predictions.

Rows are samples of the release (key, config, stage, shift, meta, source_key) joined
to one model's predictions (top-k indices and probabilities, or boxes) and to
`target`, the sample's true class in the model's label space. Which metric applies
follows the stage that made the config; a config named `clean` (or severity 0) is the
clean reference the relative metrics and clean figures use.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.evaluate.metrics.adversarial import adversarial
from pipeline.evaluate.metrics.common import accuracy
from pipeline.evaluate.metrics.corruptions import imagenet_c, is_clean, medmnist_c
from pipeline.evaluate.metrics.detection import coco_o
from pipeline.evaluate.metrics.selection import metashift
from pipeline.evaluate.metrics.trajectories import cns_bench

BENCHMARKS = ("imagenet_c", "medmnist_c", "cns_bench", "coco_o", "metashift", "adversarial")


def per_config(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Samples, labelled samples and top-1 accuracy of every config."""
    configs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        configs[row["config"]].append(row)
    return {name: {"stage": members[0]["stage"], "n": len(members),
                   "labelled": sum(r["target"] is not None for r in members),
                   "accuracy": accuracy(members) if "topk_index" in members[0] else None}
            for name, members in sorted(configs.items())}


def compute_metrics(rows: list[dict[str, Any]], *, release: Path, provenance: dict[str, Any],
                    model_labels: list[str], baseline: dict[str, Any] | None = None,
                    annotations: dict[str, dict[str, Any]] | None = None,
                    multilabel: bool = False) -> dict[str, Any]:
    """Metrics by benchmark; `annotations` adds COCO instances for configs the release has none
    for (the clean source under --clean-source)."""
    baseline = baseline or {}
    clean = [r for r in rows if is_clean(r)]
    stages: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if not is_clean(row):
            stages[row["stage"]].append(row)
    classify = bool(rows) and "topk_index" in rows[0]
    if multilabel:  # only MedMNIST-C defines a multi-label metric
        result = medmnist_c(stages["medical"], clean, len(model_labels), baseline.get("medmnist_c"), True)
        return {} if result is None else {"medmnist_c": result}
    if classify and not any(r["target"] is not None for r in rows):
        return {}
    metrics: dict[str, Any] = {}
    if classify:
        metrics["imagenet_c"] = imagenet_c(stages["corruptions"], clean, baseline.get("imagenet_c"))
        metrics["medmnist_c"] = medmnist_c(stages["medical"], clean, len(model_labels), baseline.get("medmnist_c"))
        metrics["cns_bench"] = cns_bench(stages["nuisance"])
        metrics["metashift"] = metashift(stages["metashift"], provenance)
        metrics["adversarial"] = adversarial(stages["adversarial"], clean, model_labels)
    else:
        metrics["coco_o"] = coco_o([*stages["styles"], *clean], release, model_labels, baseline.get("coco_o"),
                                   annotations)
    return {name: value for name, value in metrics.items() if value is not None}
