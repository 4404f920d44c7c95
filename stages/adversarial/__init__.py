"""Transferable adversarial examples (RAID-style): ensemble attacks stored losslessly.

Params name the surrogate classifiers the attack differentiates through, the
held-out classifiers that measure transfer, the attack (PGD under L∞ or L2,
plus MI / DI / TI boosters), the budgets and the target. One variant per
budget, e.g. `pgd-linf-eps16`, plus `<attack>-clean` with `clean_config`.
Each output is the uint8 image actually stored, checked to lie within ε of its
source after rounding; its provenance records the achieved L∞/L2 and, for
every surrogate and held-out model, the clean and adversarial predictions and
class probabilities. `attack_classes` limits the attack to some classes (RAID:
only generated images, targeted to "real"); the others are stored unchanged.
`check_source` loads and probes every model at plan time and checks the label
spaces against the source's class names. `transfer_summary` turns the rows
into per-model, per-ε rates (and, with `positive_class`, detection metrics per
generator) for provenance.json.

Budgets: `epsilons` and `step_size` are in `epsilon_unit` — "uint8" means
levels of the 0..255 pixel range (16 = 16/255), "unit" means fractions of the
[0,1] range (0.5 = an L2 budget of 0.5 on [0,1] pixels).
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from stages.adversarial.models import (
    GENERIC_LABEL,
    ClassifierSpec,
    ModelLoadError,
    check_classifier,
    load_classifier,
    weight_hashes,
)
from stages.adversarial.transfer import transfer_summary
from stages.base import Batch, Stage, StageParams, Variant

LOSSLESS_ENCODINGS = ("png",)


class AdversarialParams(StageParams):
    stage: Literal["adversarial"]
    surrogates: list[ClassifierSpec] = Field(min_length=1, description="models the attack differentiates")
    held_out: list[ClassifierSpec] = Field(default=[], description="models that only measure transfer")
    labels: list[str] | None = Field(
        default=None, description="the label space by index (target/class indices refer to it); must hold "
                                  "every source class name, in the source's order when as many; "
                                  "default: the first surrogate's labels")
    norm: Literal["linf", "l2"] = "linf"
    epsilons: list[float] = Field(min_length=1, description="budgets, in epsilon_unit; one variant each")
    epsilon_unit: Literal["uint8", "unit"] = "uint8"
    steps: int = Field(default=10, ge=1, le=10_000)
    step_size: float | None = Field(default=None, description="per-step size in epsilon_unit; "
                                                              "default 2.5·ε/steps")
    random_start: bool = False
    momentum: float = Field(default=0.0, ge=0.0, le=10.0, description="MI-FGSM decay (1.0 typical); 0 = off")
    input_diversity: float = Field(default=0.0, ge=0.0, le=1.0, description="DI probability; 0 = off")
    diversity_mode: Literal["enlarge", "shrink"] = Field(
        default="enlarge", description="enlarge: the DI paper (resize to [W, W/scale), mid-grey pad, one "
                                       "draw per surrogate); shrink: torchattacks (to [scale·W, W), black)")
    diversity_scale: float = Field(default=0.9, gt=0.0, lt=1.0,
                                   description="DI size ratio (0.9 ≈ the paper's 299/330)")
    ti_kernel: int | Literal["auto"] = Field(
        default=0, description="TI Gaussian kernel width (odd) or auto (≈ 15·W/299, the paper's "
                               "15 px at 299 px scaled to the image); 0 = off")
    ti_nsig: float = Field(default=3.0, gt=0.0, le=10.0)
    ensemble: Literal["loss", "logits", "random"] = Field(
        default="loss", description="weighted mean of losses or of logits, or (RAID's random) one "
                                    "surrogate per step drawn with odds ∝ weight")
    target: int | str | None = Field(default=None,
                                     description="target class index or name; none = untargeted")
    source_crop: tuple[int, int] | None = Field(
        default=None, description="centre-crop every source image to (height, width) before the attack, "
                                  "torchvision's CenterCrop (RAID's loader: 256×256); the crop is stored")
    clean_config: bool = Field(default=False, description="also store the clean images, evaluated and "
                                                          "scored the same way, as config <attack>-clean "
                                                          "(same keys: clean/adversarial pairs)")
    positive_class: int | str | None = Field(
        default=None, description="a detector's positive class (e.g. fake): adds AUC, AP and F1 per "
                                  "model, per generator, to the release summary")
    attack_classes: list[int | str] | None = Field(
        default=None, description="attack only samples of these classes (names or indices); the others "
                                  "are stored clean and scored; default: all")
    batch_size: int = Field(default=16, ge=1, le=4096)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    config_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
                                      description="replaces the attack name in config names")

    @field_validator("epsilons")
    @classmethod
    def _positive_finite(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(f"every epsilon must be finite and > 0, got {bad}")
        if len(set(values)) != len(values):
            raise ValueError(f"epsilons must be distinct, got {values}")
        return values

    @field_validator("source_crop")
    @classmethod
    def _positive_crop(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"source_crop must be two positive ints (height, width), got {value}")
        return value

    @field_validator("step_size")
    @classmethod
    def _positive_step(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"step_size must be finite and > 0, got {value}")
        return value

    @field_validator("ti_kernel")
    @classmethod
    def _odd_kernel(cls, value: int | str) -> int | str:
        if value != "auto" and value and (value < 3 or value % 2 == 0 or value > 101):
            raise ValueError(f"ti_kernel must be 0 (off), auto or an odd width in 3..101, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AdversarialParams:
        scale = 255.0 if self.epsilon_unit == "uint8" else 1.0
        if self.norm == "linf" and max(self.epsilons) / scale > 1.0:
            raise ValueError(f"an L∞ epsilon above the pixel range: {max(self.epsilons)} {self.epsilon_unit}")
        names = [m.display_name for m in [*self.surrogates, *self.held_out]]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique across surrogates and held_out, got {names} "
                             "(set name: on each)")
        if isinstance(self.target, str) and self.labels is not None and self.target not in self.labels:
            raise ValueError(f"target {self.target!r} is not one of labels {self.labels}")
        classes = len(self.labels) if self.labels is not None else math.inf
        if isinstance(self.target, int) and not 0 <= self.target < classes:
            known = f" 0..{len(self.labels) - 1}" if self.labels is not None else ""
            raise ValueError(f"target index {self.target} outside the label space{known}")
        return self

    def pixel(self, value: float) -> float:
        """A budget in [0,1] pixel units."""
        return value / 255.0 if self.epsilon_unit == "uint8" else value


def check_source_classes(classes: list[str], space: list[str], declared: bool) -> None:
    """The source's class names against the stage's label space: samples are matched by class
    name, so every class must be in the space; declared `labels` of the source's size must list
    them in the source's order (label i is class i); an unnamed (LABEL_i) space must have the
    source's size."""
    if not classes:
        return
    what = "labels" if declared else "the first surrogate's labels"
    if not any(GENERIC_LABEL.match(label) for label in space):
        missing = [c for c in classes if c not in space]
        if missing:
            raise ValueError(f"the source's classes {missing[:10]} are not in {what} {space[:10]}")
        if declared and len(space) == len(classes) and space != classes:
            raise ValueError(f"{what} {space[:10]} list the source's classes in another order "
                             f"{classes[:10]} (label i is the source's class i)")
    elif len(space) != len(classes):
        raise ValueError(f"{what} has {len(space)} unnamed classes, the source {len(classes)}: "
                         f"{classes[:10]}")


def check_lossless(encoding: str) -> None:
    """Raise unless `encoding` stores the perturbation bit-exactly (JPEG destroys it)."""
    if encoding not in LOSSLESS_ENCODINGS:
        raise ValueError(f"the adversarial stage needs lossless output: set output.encoding: png "
                         f"(got {encoding!r}; JPEG re-quantisation destroys the perturbation and its budget)")


class AdversarialStage(Stage):
    name: ClassVar[str] = "adversarial"
    version: ClassVar[str] = "2"
    Params: ClassVar[type[StageParams]] = AdversarialParams
    requires_lossless: ClassVar[bool] = True
    requires_exact_pixels: ClassVar[bool] = True   # no resized copies (Zarr): they break the budget
    grid_fields: ClassVar[tuple[str, ...]] = ("epsilons",)

    @staticmethod
    def exact_output_size(params: AdversarialParams) -> tuple[int, int] | None:
        """Every stored image's (height, width) when fixed (source_crop): a Zarr store of that
        size then holds the stored pixels exactly."""
        return params.source_crop

    def __init__(self, params: AdversarialParams):
        super().__init__(params)
        # a GPU is requested only when the manifest insists on CUDA; "auto" runs anywhere
        self.resources = {"GPU": 1} if params.device == "cuda" else {}

    def variants(self) -> list[Variant]:
        attacks = [Variant(self.name, self._config_name(eps), self._variant_params(eps))
                   for eps in self.params.epsilons]
        if not self.params.clean_config:
            return attacks
        clean_name = self._config_name(0.0).rsplit("-", 2)[0] + "-clean"
        return attacks + [Variant(self.name, clean_name, {**self._variant_params(0.0), "attack": "none"})]

    def _config_name(self, epsilon: float) -> str:
        p = self.params
        boosters = ["mi"] * bool(p.momentum) + ["di"] * bool(p.input_diversity) + ["ti"] * bool(p.ti_kernel)
        target = [re.sub(r"[^A-Za-z0-9_-]+", "_", f"t{p.target}")] if p.target is not None else []
        attack = p.config_prefix or "-".join(["pgd", *boosters, *target])
        amount = f"{epsilon:g}".replace(".", "p").replace("-", "m").replace("+", "")
        return f"{attack}-{p.norm}-eps{amount}"

    def _variant_params(self, epsilon: float) -> dict[str, Any]:
        p = self.params
        step = p.step_size if p.step_size is not None else 2.5 * epsilon / p.steps
        return {
            "attack": "pgd", "norm": p.norm, "epsilon": epsilon, "epsilon_unit": p.epsilon_unit,
            "epsilon_pixel": p.pixel(epsilon), "steps": p.steps, "step_size_pixel": p.pixel(step),
            "random_start": p.random_start, "momentum": p.momentum, "input_diversity": p.input_diversity,
            "diversity_mode": p.diversity_mode, "diversity_scale": p.diversity_scale,
            "ti_kernel": p.ti_kernel, "ti_nsig": p.ti_nsig, "ensemble": p.ensemble, "target": p.target,
            "attack_classes": p.attack_classes, "positive_class": p.positive_class,
            "source_crop": list(p.source_crop) if p.source_crop else None,
            "surrogates": [m.display_name for m in p.surrogates],
            "weights": {m.display_name: m.weight for m in p.surrogates},
            "held_out": [m.display_name for m in p.held_out],
        }

    def weight_hashes(self) -> dict[str, str]:
        hashes = {}
        for role, specs in (("surrogate", self.params.surrogates), ("held_out", self.params.held_out)):
            for spec in specs:
                for file_name, digest in weight_hashes(spec).items():
                    hashes[f"{role}/{spec.display_name}/{file_name}"] = digest
        return hashes

    def release_summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return transfer_summary(rows)

    def check_source(self, description: dict[str, Any]) -> None:
        """Before any work: every model loads and answers a probe with one logit per label, the
        models share the stage's label space, and the source's class names fit it. Raises ValueError."""
        p = self.params
        first_labels: list[str] = []
        for spec in [*p.surrogates, *p.held_out]:   # one network in memory at a time
            model = check_classifier(spec)
            first_labels = first_labels or model.labels
            model.align_labels(list(p.labels or first_labels))
        space = list(p.labels or first_labels)
        check_source_classes([str(c) for c in description.get("classes") or []], space, p.labels is not None)
        from stages.adversarial.crafting import class_index

        checked = [("target", p.target), ("positive_class", p.positive_class)]
        for name, value in checked + [("attack_classes", c) for c in p.attack_classes or []]:
            if value is not None:
                class_index(value, space, name)

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        from stages.adversarial.crafting import craft_batch

        try:
            models = self._models()
        except ModelLoadError as exc:
            for i in batch.ok_indices():
                batch.fail(i, f"adversarial: {exc}")
            return batch
        craft_batch(batch, variant.params, models, self.params, self._device())
        return batch

    def _device(self) -> str:
        if self.params.device != "auto":
            return self.params.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _models(self) -> dict[str, Any]:
        """Surrogates and held-out models on this worker's device, logits in the source's label order."""
        device = self._device()
        surrogates = [load_classifier(spec, device) for spec in self.params.surrogates]
        held_out = [load_classifier(spec, device) for spec in self.params.held_out]
        labels = self.params.labels or surrogates[0].labels
        for model in [*surrogates, *held_out]:
            model.align_labels(labels)   # logits in the stage's label order; samples map by class name
        return {"surrogates": surrogates, "held_out": held_out, "labels": list(labels)}


STAGE = AdversarialStage

__all__ = ["STAGE", "AdversarialParams", "AdversarialStage", "ClassifierSpec", "check_lossless",
           "transfer_summary"]
