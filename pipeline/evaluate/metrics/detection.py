"""COCO-O (Mao et al. 2023): bbox AP per domain with pycocotools on the release's
`annotations/<domain>/instances.json`, the mean over domains, and effective robustness.

AP is COCOeval's stats[0] (AP@[.50:.95], all areas, 100 detections). Model labels map
to the annotation categories by name, else the label index is taken as the category id.
Effective robustness is the AP above the trend of shifted AP against clean AP over many
detectors; the official repository ships no code for that fit, so with one baseline model
the trend is the line through the origin and the baseline: ER = AP_O − AP_clean ·
AP_O^base / AP_clean^base (an approximation). The plain drop (AP_clean − AP_O) and the
relative drop (1 − AP_O / AP_clean) need no baseline.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.evaluate.metrics.common import mean_or_none

CLEAN = "clean"


def coco_detections(rows: list[dict[str, Any]], annotations: dict[str, Any],
                    model_labels: list[str]) -> list[dict[str, Any]]:
    """The loadRes list of one domain: image ids by file name (`<key>.<ext>`), categories by name."""
    ids = {Path(image["file_name"]).stem: image["id"] for image in annotations["images"]}
    by_name = {c["name"]: c["id"] for c in annotations["categories"]}
    detections = []
    for row in rows:
        if row["key"] not in ids:
            continue
        for box, score, label in zip(row["boxes"], row["box_scores"], row["box_labels"]):
            name = model_labels[label] if 0 <= label < len(model_labels) else None
            detections.append({"image_id": ids[row["key"]], "category_id": by_name.get(name, int(label)),
                               "bbox": [float(v) for v in box], "score": float(score)})
    return detections


def bbox_ap(annotations: dict[str, Any], detections: list[dict[str, Any]]) -> float | None:
    """COCOeval bbox AP@[.50:.95]; 0 with no detections, None with no ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not annotations.get("annotations"):
        return None
    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        truth = COCO()
        truth.dataset = json.loads(json.dumps(annotations))
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return max(float(evaluation.stats[0]), 0.0)  # -1 means "no ground truth in this area range"


def coco_o(rows: list[dict[str, Any]], release: Path, model_labels: list[str], baseline: dict[str, Any] | None,
           extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """AP per config that has annotations (the release's, or `extra` by config name)."""
    extra = extra or {}
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if "boxes" in row and (row["config"] in extra or _annotation_path(release, row["config"]).is_file()):
            by_config[row["config"]].append(row)
    if not by_config:
        return None
    ap = {}
    for config, members in sorted(by_config.items()):
        annotations = extra.get(config) or json.loads(_annotation_path(release, config).read_text())
        ap[config] = bbox_ap(annotations, coco_detections(members, annotations, model_labels))
    clean = ap.pop(CLEAN, None)
    result: dict[str, Any] = {"ap": ap, "mean_ap": mean_or_none(ap.values()), "clean_ap": clean}
    result |= robustness(result["mean_ap"], clean, baseline)
    return result


def _annotation_path(release: Path, config: str) -> Path:
    return release / "annotations" / config / "instances.json"


def robustness(shifted: float | None, clean: float | None, baseline: dict[str, Any] | None) -> dict[str, Any]:
    if shifted is None or clean is None:
        return {}
    out: dict[str, Any] = {"ap_drop": clean - shifted, "relative_drop": 1 - shifted / clean if clean else None}
    base_shifted, base_clean = (baseline or {}).get("mean_ap"), (baseline or {}).get("clean_ap")
    if base_shifted is not None and base_clean:
        out["effective_robustness"] = shifted - clean * base_shifted / base_clean
    return out
