"""The models `evaluate` runs: classifiers (the adversarial stage's three formats) and
transformers object detectors, each turned into a predictor of per-sample records.

A `--model` argument is a path (transformers folder, `.pt2`, TorchScript file) or a
`.json`/`.yaml` file holding a classifier spec (path, name, input_size, mean, std,
labels), the way TorchScript files declare their preprocessing. Weights are read
offline and only as safetensors (transformers) or as programs (`torch.export`,
TorchScript); their sha256 goes into the results and the shard fingerprints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stages.adversarial.models import ClassifierSpec, ModelLoadError, load_classifier, weight_files, weight_hashes

DETECTOR_SUFFIX = "ForObjectDetection"
_DETECTORS: dict[tuple, Any] = {}  # per-process cache: (path, device) -> (model, processor)


class EvalModel:
    """A model named on the command line: its spec, kind and weight hashes (no network loaded)."""

    def __init__(self, spec: ClassifierSpec, kind: str):
        self.spec, self.kind = spec, kind
        self.name = spec.display_name
        self.weights = weight_hashes(spec)
        self.multilabel = kind == "classifier" and _transformers_config(spec).get("problem_type") == \
            "multi_label_classification"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "multilabel": self.multilabel, "path": self.spec.path,
                "format": self.spec.resolved_format(), "weights_sha256": self.weights,
                "declared": self.spec.model_dump(exclude={"path", "name"}, exclude_none=True)}


def parse_model(argument: str) -> EvalModel:
    """`--model` value -> EvalModel; ModelLoadError/ValueError name what is wrong."""
    path = Path(argument)
    if path.suffix in (".json", ".yaml", ".yml") and path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(path.read_text())
        if not isinstance(data, dict) or "path" not in data:
            raise ValueError(f"{argument}: a model spec file must be a mapping with at least 'path'")
        model_path = Path(data["path"])
        if not model_path.is_absolute():  # relative to the spec file, so specs travel with models
            data["path"] = str(path.parent / model_path)
        spec = ClassifierSpec(**data)
    else:
        if not path.exists():
            raise ModelLoadError(f"model {argument} does not exist")
        spec = ClassifierSpec(path=argument)
    weight_files(spec)
    model = EvalModel(spec, "detector" if is_detector(spec) else "classifier")
    if spec.resolved_format() != "transformers" and spec.input_size is None:
        raise ModelLoadError(f"{spec.path}: input_size is not declared (a .pt2/TorchScript model needs a spec "
                             "file with input_size, mean, std and labels)")
    model_labels(model)  # a classifier without labels is refused here, not on a worker
    return model


def is_detector(spec: ClassifierSpec) -> bool:
    return any(str(a).endswith(DETECTOR_SUFFIX) for a in _transformers_config(spec).get("architectures") or [])


def _transformers_config(spec: ClassifierSpec) -> dict[str, Any]:
    if spec.resolved_format() != "transformers":
        return {}
    return json.loads((Path(spec.path) / "config.json").read_text())


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ClassifierPredictor:
    """Top-k class indices and softmax probabilities for batches of uint8 images; a multi-label
    model keeps every label's sigmoid probability instead."""

    def __init__(self, model: EvalModel, device: str, topk: int):
        self.classifier = load_classifier(model.spec, device)
        self.labels = self.classifier.labels
        self.multilabel = model.multilabel
        self.k = len(self.labels) if self.multilabel else min(topk, len(self.labels))
        self.device = device

    def __call__(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        import torch

        x = torch.from_numpy(np.stack([_hwc(im) for im in images])).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        with torch.inference_mode():
            logits = self.classifier(x).float()
            probs = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
            scores, index = probs.topk(self.k, dim=1)
        scores, index = scores.cpu().numpy(), index.cpu().numpy()
        return [{"topk_index": index[i].tolist(), "topk_score": scores[i].tolist()} for i in range(len(images))]


class DetectorPredictor:
    """Boxes (COCO xywh in the image's pixels), scores and model label indices per image."""

    def __init__(self, model: EvalModel, device: str, max_detections: int = 100):
        key = (str(Path(model.spec.path).resolve()), device)
        if key not in _DETECTORS:
            _DETECTORS[key] = _load_detector(model.spec.path, device)
        self.model, self.processor = _DETECTORS[key]
        config = self.model.config
        self.labels = [config.id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
        self.device, self.max_detections = device, max_detections

    def __call__(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        import torch

        rgb = [np.repeat(_hwc(im), 3, axis=2) if _hwc(im).shape[2] == 1 else im for im in images]
        inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
        sizes = torch.tensor([im.shape[:2] for im in rgb], device=self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        found = self.processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
        return [self._record(d) for d in found]

    def _record(self, detections: dict[str, Any]) -> dict[str, Any]:
        scores = detections["scores"].float().cpu().numpy()
        order = np.argsort(-scores, kind="stable")[: self.max_detections]
        xyxy = detections["boxes"].cpu().numpy().astype(np.float64)[order]
        boxes = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]) if len(order) else np.zeros((0, 4))
        return {"boxes": boxes.round(3).tolist(), "box_scores": scores[order].astype(np.float64).round(6).tolist(),
                "box_labels": detections["labels"].cpu().numpy()[order].tolist()}


def _load_detector(path: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    try:
        model = AutoModelForObjectDetection.from_pretrained(path, use_safetensors=True, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises many kinds; all mean "unusable model"
        raise ModelLoadError(f"cannot load object detector {path}: {type(exc).__name__}: {exc}") from exc
    return model.to(device).eval(), processor


def predictor_for(model: EvalModel, device: str, topk: int) -> ClassifierPredictor | DetectorPredictor:
    if model.kind == "detector":
        return DetectorPredictor(model, device)
    return ClassifierPredictor(model, device, topk)


def _hwc(image: np.ndarray) -> np.ndarray:
    """HxW grey -> HxWx1; channels stay as stored (the classifier adapts 1 <-> 3)."""
    return image[..., None] if image.ndim == 2 else image


def model_labels(model: EvalModel) -> list[str]:
    """Class names in logit order, read from the files without building the network."""
    if model.spec.labels is not None:
        return list(model.spec.labels)
    if model.spec.resolved_format() != "transformers":
        raise ModelLoadError(f"{model.spec.path}: labels are not declared (use a model spec file with "
                             "labels: [names in logit order])")
    config = json.loads((Path(model.spec.path) / "config.json").read_text())
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    count = config.get("num_labels") or len(id2label)
    return [id2label.get(i, f"LABEL_{i}") for i in range(count)]
