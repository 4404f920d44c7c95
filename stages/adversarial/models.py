"""Classifiers the adversarial stage attacks (surrogates) and measures transfer on (held-out).

Three on-disk forms are read, all without executing pickled Python:
- a `transformers` image-classification directory (`config.json` + safetensors),
  loaded with `AutoModelForImageClassification.from_pretrained(dir)`; input size,
  mean and std come from its `preprocessor_config.json` unless the manifest says;
- a `torch.export` program (`.pt2`), and
- a TorchScript file (`.pt`, `.ts`, `.jit`); for both, the manifest declares
  input size, mean, std and the label names.

Every classifier takes images in [0,1] pixel space at their own resolution and
applies its preprocessing (resize or not, centre crop, channel adaptation,
normalisation; see `preprocessing`) inside the autograd graph, so attacks
perturb pixels, never normalised tensors. A single-logit detector (one logit x
for the second class, as AI-generated-image detectors often are) is read as
the two logits [−x, x], as RAID does. Models load lazily, once per worker
process (a module-level cache by path); `check_classifier` loads one and runs a
probe forward pass so a bad file or a wrong label count is found before work.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stages.adversarial.preprocessing import Preprocessing, from_processor_config
from stages.base import ManifestPath

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit")
GENERIC_LABEL = re.compile(r"^LABEL_\d+$")

_MODELS: dict[tuple, Any] = {}          # per-process cache: (path, format, device) -> module
_HASHES: dict[tuple, dict[str, str]] = {}  # (path, sizes, mtimes) -> {file: sha256}


class ModelLoadError(ValueError):
    """A classifier that cannot be used: missing files, unreadable weights, bad declarations.

    A ValueError, so that planning reports it as bad input (exit 2) before any work."""


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
                                  "directory has a preprocessor_config.json; with resize none, the "
                                  "size of the plan-time probe pass (default 224×224)")
    resize: Literal["exact", "shortest_edge", "none"] | None = Field(
        default=None, description="exact: to input_size (default); shortest_edge: shorter side to "
                                  "shortest_edge keeping the aspect; none: as stored")
    shortest_edge: int | None = Field(default=None, ge=1, description="for resize: shortest_edge")
    crop: tuple[int, int] | None = Field(default=None, description="centre crop (height, width) after "
                                                                    "resizing, torchvision convention")
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = Field(
        default=None, description="resize filter (default bilinear, or the processor's resample)")
    single_logit: bool = Field(default=False, description="one logit x for labels[1]; read as [−x, x]")
    weight: float = Field(default=1.0, gt=0.0, le=1000.0, description="weight in the ensemble loss "
                                                                        "(random ensemble: pick odds)")
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

    @field_validator("crop")
    @classmethod
    def _positive_crop(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"crop must be two positive ints (height, width), got {value}")
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
    processor = [path / "preprocessor_config.json"] if (path / "preprocessor_config.json").is_file() else []
    return [path / "config.json", *processor, *weights]


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


def load_classifier(spec: ClassifierSpec, device: str, cache: bool = True) -> Classifier:
    """The classifier for `spec` on `device`; with `cache`, the network loads once per process."""
    fmt = spec.resolved_format()
    cache_key = (str(Path(spec.path).resolve()), fmt, device)
    loaded = _MODELS.get(cache_key)
    if loaded is None:
        weight_files(spec)  # clear error for a missing path before torch says something vaguer
        loaders = {"transformers": _load_transformers, "export": _load_export,
                   "torchscript": _load_torchscript}
        try:
            loaded = loaders[fmt](spec, device)
        except ModelLoadError:
            raise
        except Exception as exc:  # torch/transformers raise many kinds; all mean "unusable model"
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ModelLoadError(f"cannot load {fmt} model {spec.path}: {type(exc).__name__}: "
                                 f"{first_line}") from exc
        if cache:
            _MODELS[cache_key] = loaded
    network, declared = loaded
    labels, prep = _preprocessing(spec, declared)
    return Classifier(spec.display_name, network, prep, labels, spec.single_logit, spec.weight)


def check_classifier(spec: ClassifierSpec) -> Classifier:
    """Load `spec` on the CPU and run one probe forward pass; raise ModelLoadError on any problem.
    Not cached: the planning process should not hold every network for the whole build."""
    import torch

    model = load_classifier(spec, "cpu", cache=False)
    height, width = model.prep.probe_size()
    try:
        with torch.no_grad():
            raw = model.network(model.prep(torch.full((1, model.prep.channels, height, width), 0.5)))
    except Exception as exc:  # noqa: BLE001 - any failure here means the declarations do not fit
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelLoadError(f"model {model.name!r} fails on a {height}×{width} input: "
                             f"{type(exc).__name__}: {first_line}") from None
    model.check_logits(raw)
    return model


def _load_transformers(spec: ClassifierSpec, device: str) -> tuple[Any, dict[str, Any]]:
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(spec.path, use_safetensors=True)
    model = model.to(device).eval().requires_grad_(False)  # attacks need input gradients only
    declared = _processor_config(Path(spec.path), spec.interpolation is not None)
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


def _processor_config(model_dir: Path, interpolation_declared: bool) -> dict[str, Any]:
    """Preprocessing from a transformers `preprocessor_config.json`, when present."""
    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
        return from_processor_config(config, interpolation_declared)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def _preprocessing(spec: ClassifierSpec, declared: dict[str, Any]) -> tuple[list[str], Preprocessing]:
    """The manifest's declarations win over what the model files say."""
    pick = lambda field, default=None: (getattr(spec, field) if getattr(spec, field) is not None  # noqa: E731
                                        else declared.get(field, default))
    resize, size = _resize_of(spec, declared)
    labels = pick("labels")
    if labels is None:
        raise ModelLoadError(f"{spec.path}: labels are not declared (set labels: [names in logit order])")
    crop, rounding = (spec.crop, "round") if spec.crop is not None else (declared.get("crop"),
                                                                         declared.get("crop_rounding", "round"))
    prep = Preprocessing(resize=resize, size=size,
                         crop=tuple(crop) if crop is not None else None, crop_rounding=rounding,
                         interpolation=pick("interpolation", "bilinear"), mean=tuple(pick("mean", (0.0,))),
                         std=tuple(pick("std", (1.0,))), channels=pick("channels", 3))
    for field in ("mean", "std"):
        if len(getattr(prep, field)) not in (1, prep.channels):
            raise ModelLoadError(f"{spec.path}: {field} has {len(getattr(prep, field))} values, expected 1 or "
                                 f"{prep.channels} (one per input channel)")
    if spec.single_logit and len(labels) != 2:
        raise ModelLoadError(f"{spec.path}: single_logit needs exactly 2 labels (negative, positive), "
                             f"got {len(labels)}")
    return list(labels), prep


def _resize_of(spec: ClassifierSpec, declared: dict[str, Any]) -> tuple[str, Any]:
    """(resize mode, size): the manifest's mode and sizes win; the processor config fills the gaps."""
    if spec.resize is not None:
        resize = spec.resize
    elif spec.input_size is not None:
        resize = "exact"
    elif spec.shortest_edge is not None:
        resize = "shortest_edge"
    else:
        resize = declared.get("resize", "exact")
    from_config = declared.get("size") if declared.get("resize") == resize else None
    # under resize none, input_size is only the size of the plan-time probe pass
    manifest = {"exact": spec.input_size, "shortest_edge": spec.shortest_edge, "none": spec.input_size}[resize]
    size = manifest if manifest is not None else from_config
    if resize != "none" and size is None:
        wanted = "shortest_edge: N" if resize == "shortest_edge" else "input_size: [height, width]"
        raise ModelLoadError(f"{spec.path}: the input size is not declared (set {wanted} in the manifest, "
                             "resize: none, or ship a preprocessor_config.json)")
    return resize, tuple(size) if isinstance(size, (list, tuple)) else size


class Classifier:
    """A network plus its preprocessing: logits for [0,1] images of any size, differentiably."""

    def __init__(self, name: str, network: Any, prep: Preprocessing, labels: list[str],
                 single_logit: bool = False, weight: float = 1.0):
        self.name = name
        self.network = network
        self.prep = prep
        self.labels = labels
        self.single_logit = single_logit
        self.weight = weight
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
            self.order = None if index == list(range(len(index))) else torch.tensor(index)
        elif len(self.labels) != len(source_labels):
            raise ModelLoadError(f"model {self.name!r} has {len(self.labels)} classes, "
                                 f"expected {len(source_labels)} (the source's label count)")

    def has_named_labels(self) -> bool:
        return _all_named(self.labels)

    def check_logits(self, raw: Any) -> None:
        """Raise unless the network's raw output has one logit per declared label (1 if single_logit)."""
        expected = 1 if self.single_logit else len(self.labels)
        if raw.dim() != 2 or raw.shape[-1] != expected:
            what = "a single logit" if self.single_logit else f"{len(self.labels)} logits (one per label)"
            raise ModelLoadError(f"model {self.name!r} outputs shape {tuple(raw.shape)} per batch, expected "
                                 f"{what}; declared labels {self.labels[:10]}")

    def __call__(self, images: Any) -> Any:
        import torch

        raw = self.network(self.prep(images))
        self.check_logits(raw)
        logits = torch.cat([-raw, raw], dim=-1) if self.single_logit else raw
        return logits if self.order is None else logits[:, self.order.to(logits.device)]


def _all_named(labels: list[str]) -> bool:
    return bool(labels) and not any(GENERIC_LABEL.match(str(label)) for label in labels)
