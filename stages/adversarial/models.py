"""Classifiers the adversarial stage attacks (surrogates) and measures transfer on (held-out).

Three on-disk forms are read, all without executing pickled Python:
- a `transformers` image-classification directory (`config.json` + safetensors),
  loaded with `AutoModelForImageClassification.from_pretrained(dir)`; input size,
  mean and std come from its `preprocessor_config.json` unless the manifest says;
- a `torch.export` program (`.pt2`), and
- a TorchScript file (`.pt`, `.ts`, `.jit`); for both, the manifest declares
  input size, mean, std and the label names.

Every classifier takes images in [0,1] pixel space at their own resolution and
applies its preprocessing (resize, channel adaptation, normalisation) inside
the autograd graph, so attacks perturb pixels, never normalised tensors.
Models load lazily, once per worker process (a module-level cache by path).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stages.base import ManifestPath

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit")
GENERIC_LABEL = re.compile(r"^LABEL_\d+$")

_MODELS: dict[tuple, Any] = {}          # per-process cache: (path, format, device) -> module
_HASHES: dict[tuple, dict[str, str]] = {}  # (path, sizes, mtimes) -> {file: sha256}


class ModelLoadError(Exception):
    """A classifier that cannot be used: missing files, unreadable weights, bad declarations."""


class ClassifierSpec(BaseModel):
    """One classifier named in the manifest (a surrogate or a held-out model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: ManifestPath = Field(
        description="transformers model directory, .pt2 (torch.export) or TorchScript file")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$",
                             description="name used in provenance; default: the file/directory stem")
    format: Literal["auto", "transformers", "export", "torchscript"] = "auto"
    input_size: tuple[int, int] | None = Field(
        default=None, description="(height, width) the model expects; required unless a transformers "
                                  "directory has a preprocessor_config.json")
    mean: tuple[float, ...] | None = Field(default=None, description="per-channel mean on [0,1] pixels")
    std: tuple[float, ...] | None = Field(default=None, description="per-channel std on [0,1] pixels")
    channels: Literal[1, 3] | None = Field(default=None, description="input channels (default 3)")
    labels: list[str] | None = Field(default=None, description="class names in logit order; required "
                                                                "for .pt2/TorchScript files")

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"input_size must be two positive ints (height, width), got {value}")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError(f"std values must be finite and > 0, got {value}")
        return value

    @property
    def display_name(self) -> str:
        return self.name or re.sub(r"[^A-Za-z0-9_-]+", "_", Path(self.path).stem or Path(self.path).name)

    def resolved_format(self) -> str:
        if self.format != "auto":
            return self.format
        path = Path(self.path)
        if path.is_dir() or not path.suffix:
            return "transformers"
        if path.suffix == ".pt2":
            return "export"
        if path.suffix in TORCHSCRIPT_SUFFIXES:
            return "torchscript"
        raise ModelLoadError(f"{self.path}: cannot tell the model format from the suffix {path.suffix!r}; "
                             "expected a transformers directory, .pt2 or one of "
                             + ", ".join(TORCHSCRIPT_SUFFIXES))


def weight_files(spec: ClassifierSpec) -> list[Path]:
    path = Path(spec.path)
    if spec.resolved_format() != "transformers":
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        return [path]
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a transformers model directory (no config.json)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelLoadError(f"{path} holds no *.safetensors weights (only safetensors are loaded)")
    return [path / "config.json", *weights]


def weight_hashes(spec: ClassifierSpec) -> dict[str, str]:
    """sha256 of every file that defines the model, by file name; cached on size and mtime."""
    files = weight_files(spec)
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _HASHES:
        _HASHES[key] = {f.name: _sha256_file(f) for f in files}
    return dict(_HASHES[key])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_classifier(spec: ClassifierSpec, device: str) -> Classifier:
    """The classifier for `spec` on `device`; the network loads once per process."""
    fmt = spec.resolved_format()
    cache_key = (str(Path(spec.path).resolve()), fmt, device)
    if cache_key not in _MODELS:
        weight_files(spec)  # clear error for a missing path before torch says something vaguer
        loaders = {"transformers": _load_transformers, "export": _load_export,
                   "torchscript": _load_torchscript}
        try:
            _MODELS[cache_key] = loaders[fmt](spec, device)
        except ModelLoadError:
            raise
        except Exception as exc:  # torch/transformers raise many kinds; all mean "unusable model"
            raise ModelLoadError(f"cannot load {fmt} model {spec.path}: {type(exc).__name__}: {exc}") from exc
    network, declared = _MODELS[cache_key]
    return Classifier(spec.display_name, network, _preprocessing(spec, declared), device)


def _load_transformers(spec: ClassifierSpec, device: str) -> tuple[Any, dict[str, Any]]:
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(spec.path, use_safetensors=True)
    model = model.to(device).eval().requires_grad_(False)  # attacks need input gradients only
    declared = _processor_config(Path(spec.path))
    declared["channels"] = getattr(model.config, "num_channels", 3)
    id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
    declared["labels"] = [id2label.get(i, f"LABEL_{i}") for i in range(model.config.num_labels)]

    def forward(pixel_values: Any) -> Any:
        return model(pixel_values=pixel_values).logits

    return forward, declared


def _load_export(spec: ClassifierSpec, device: str) -> tuple[Any, dict[str, Any]]:
    import torch

    module = torch.export.load(spec.path).module().to(device).requires_grad_(False)
    return module, {}


def _load_torchscript(spec: ClassifierSpec, device: str) -> tuple[Any, dict[str, Any]]:
    import torch

    module = torch.jit.load(spec.path, map_location=device).eval()
    for parameter in module.parameters():  # ScriptModules lack requires_grad_()
        parameter.requires_grad_(False)
    return module, {}


def _processor_config(model_dir: Path) -> dict[str, Any]:
    """Input size, mean and std from a transformers `preprocessor_config.json`, when present."""
    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    size = config.get("crop_size") if config.get("do_center_crop") else None
    size = size or config.get("size")
    if isinstance(size, int):
        size = {"height": size, "width": size}
    declared: dict[str, Any] = {}
    if isinstance(size, dict) and "height" in size and "width" in size:
        declared["input_size"] = (int(size["height"]), int(size["width"]))
    elif isinstance(size, dict) and "shortest_edge" in size:
        declared["input_size"] = (int(size["shortest_edge"]),) * 2
    if config.get("do_normalize", True):
        declared["mean"] = tuple(config.get("image_mean", IMAGENET_MEAN))
        declared["std"] = tuple(config.get("image_std", IMAGENET_STD))
    else:
        declared["mean"], declared["std"] = (0.0,), (1.0,)
    return declared


def _preprocessing(spec: ClassifierSpec, declared: dict[str, Any]) -> dict[str, Any]:
    """The manifest's declarations win over what the model files say."""
    pick = lambda field, default=None: (getattr(spec, field) if getattr(spec, field) is not None  # noqa: E731
                                        else declared.get(field, default))
    prep = {"input_size": pick("input_size"), "mean": pick("mean", (0.0,)), "std": pick("std", (1.0,)),
            "channels": pick("channels", 3), "labels": pick("labels")}
    if prep["input_size"] is None:
        raise ModelLoadError(f"{spec.path}: input_size is not declared (set input_size: [height, width] "
                             "in the manifest or ship a preprocessor_config.json)")
    if prep["labels"] is None:
        raise ModelLoadError(f"{spec.path}: labels are not declared (set labels: [names in logit order])")
    for field in ("mean", "std"):
        if len(prep[field]) not in (1, prep["channels"]):
            raise ModelLoadError(f"{spec.path}: {field} has {len(prep[field])} values, expected 1 or "
                                 f"{prep['channels']} (one per input channel)")
    return prep


class Classifier:
    """A network plus its preprocessing: logits for [0,1] images of any size, differentiably."""

    def __init__(self, name: str, network: Any, prep: dict[str, Any], device: str):
        import torch

        self.name = name
        self.network = network
        self.labels: list[str] = list(prep["labels"])
        self.input_size: tuple[int, int] = tuple(prep["input_size"])
        self.channels: int = prep["channels"]
        self.mean = torch.tensor(prep["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(prep["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.order: Any = None  # logit permutation into the source's label order

    def align_labels(self, source_labels: list[str]) -> None:
        """Reorder logits to the source's label order; raise on a different label space."""
        import torch

        if self.has_named_labels() and _all_named(source_labels):
            if sorted(self.labels) != sorted(source_labels):
                missing = sorted(set(source_labels) - set(self.labels))
                extra = sorted(set(self.labels) - set(source_labels))
                raise ModelLoadError(
                    f"model {self.name!r} label space differs from the source labels: "
                    f"expected {len(source_labels)} classes {source_labels[:10]}, got {len(self.labels)}; "
                    f"missing {missing[:10]}, extra {extra[:10]}")
            index = [self.labels.index(name) for name in source_labels]
            self.order = torch.tensor(index, device=self.mean.device)
        elif len(self.labels) != len(source_labels):
            raise ModelLoadError(f"model {self.name!r} has {len(self.labels)} classes, "
                                 f"expected {len(source_labels)} (the source's label count)")

    def has_named_labels(self) -> bool:
        return _all_named(self.labels)

    def __call__(self, images: Any) -> Any:
        import torch.nn.functional as F

        x = images
        if x.shape[-2:] != self.input_size:
            shrinking = x.shape[-2] > self.input_size[0] or x.shape[-1] > self.input_size[1]
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=shrinking)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.channels == 1:
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        logits = self.network((x - self.mean) / self.std)
        return logits if self.order is None else logits[:, self.order]


def _all_named(labels: list[str]) -> bool:
    return bool(labels) and not any(GENERIC_LABEL.match(str(label)) for label in labels)
