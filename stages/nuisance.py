"""Continuous nuisance shifts (CNS-Bench): LoRA sliders at a list of scales.

Each input — a (class, seed) from the `prompts` source for text-to-image, or
a source image for image-to-image — becomes one trajectory: the same seed
rendered at every scale, the slider switched on only for t <= start_noise.
One variant per shift; each class uses the slider trained for it (or a
class-agnostic one). Output keys are `<input key>-s<scale>` (0.5 -> s0p5)
and every sample's shift record carries trajectory, scale, class_name and
shift_name.

A slider entry with `train:` is trained by the build before generation (one
task per slider, the Concept Sliders objective on the stage's model) and
retrained only when its inputs change: base weights, class, shift, prompts
or training settings.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stages.base import Batch, ManifestPath, Preparation, Stage, Variant
from stages.generative.spec import (
    DEFAULT_SCALES,
    DiffusionParams,
    SliderTrainingSettings,
    check_scales,
    gpu_resources,
    scale_tag,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9]+")
TRAINING_SCHEMA = "shiftforge.slider-training/1"  # bump when the training objective changes


class SliderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shift: str = Field(min_length=1, description="shift name, e.g. 'heavy snow'; one output config per shift")
    path: ManifestPath = Field(
        min_length=1,
        description="LoRA slider: .safetensors from `shiftforge train-slider`/`convert-slider`, "
        "or a CNS-Bench LoRANetwork .pt",
    )
    class_name: str | None = Field(default=None, description="class this slider was trained for; none = any")
    train: SliderTrainingSettings | None = Field(
        default=None, description="train the slider into `path` before generation (needs class_name)"
    )


class NuisanceParams(DiffusionParams):
    stage: Literal["nuisance"]
    mode: Literal["text2image", "image2image"] = "text2image"
    sliders: list[SliderSpec] = Field(min_length=1)
    scales: list[float] = Field(default_factory=lambda: list(DEFAULT_SCALES))
    start_noise: int = Field(default=750, ge=0, le=1000, description="slider on only for timesteps t <= this")
    prompt: str = Field(
        default="a picture of a {class}", description="template; {class} = the class's prompt text"
    )
    class_prompts: dict[str, str] = Field(
        default_factory=dict, description="class name -> text for {class} (e.g. a textual-inversion token)"
    )
    strength: float = Field(default=0.75, gt=0, le=1, description="image-to-image: share of the schedule run")
    output_size: int | None = Field(default=None, ge=8, le=4096, description="square output side (CNS: 256)")
    sampler: Literal["branched", "plain"] = Field(
        default="branched",
        description="branched: shared prefix + all scales per UNet call; plain: reference loop",
    )
    trajectory_batch: int = Field(
        default=8,
        ge=1,
        le=256,
        description="branched: trajectories denoised together per UNet call (CNS-Bench batches 25 seeds)",
    )

    @field_validator("scales")
    @classmethod
    def _finite_distinct_scales(cls, value: list[float]) -> list[float]:
        return check_scales(value)

    @field_validator("prompt")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        if not fields <= {"class"}:
            raise ValueError(f"prompt may only use the placeholder {{class}}, got {sorted(fields)}")
        return value

    @model_validator(mode="after")
    def _sliders_consistent(self) -> NuisanceParams:
        seen: dict[tuple[str, str | None], int] = {}
        configs: dict[str, str] = {}
        trained: dict[str, int] = {}
        for j, slider in enumerate(self.sliders):
            if slider.train is not None:
                if slider.class_name is None:
                    raise ValueError(f"sliders[{j}].train needs class_name: a slider is trained for one class")
                if slider.path in trained:
                    raise ValueError(
                        f"sliders[{j}].path {slider.path!r} is also trained by sliders[{trained[slider.path]}]"
                    )
                trained[slider.path] = j
            pair = (slider.shift, slider.class_name)
            if pair in seen:
                raise ValueError(
                    f"sliders[{j}] repeats shift {slider.shift!r} for class {slider.class_name!r}"
                )
            seen[pair] = j
            config = shift_config(slider.shift)
            if configs.setdefault(config, slider.shift) != slider.shift:
                raise ValueError(
                    f"shifts {configs[config]!r} and {slider.shift!r} share the folder name {config!r}"
                )
            if (
                self.class_prompts
                and slider.class_name is not None
                and slider.class_name not in self.class_prompts
            ):
                raise ValueError(
                    f"sliders[{j}].class_name {slider.class_name!r} is not in class_prompts "
                    f"({sorted(self.class_prompts)})"
                )
        return self


def shift_config(shift: str) -> str:
    return _UNSAFE.sub("_", shift).strip("_") or "shift"


class NuisanceStage(Stage):
    name = "nuisance"
    version = "1"
    Params = NuisanceParams
    shares_work_across_variants = True   # every shift of a slice reuses its prefix and scale 0

    def __init__(self, params: NuisanceParams):
        super().__init__(params)
        self._adapters: dict[str, str] = {}  # slider sha256 -> adapter name in this process's UNet

    @property
    def resources(self) -> dict[str, float]:  # type: ignore[override]
        return gpu_resources(self.params.device)

    @property
    def needs_image(self) -> bool:  # type: ignore[override]
        return self.params.mode == "image2image"

    def variants(self) -> list[Variant]:
        p = self.params
        shifts = list(dict.fromkeys(s.shift for s in p.sliders))
        common = {
            "model": p.model,
            "mode": p.mode,
            "scales": list(p.scales),
            "start_noise": p.start_noise,
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "sampler": p.sampler,
        }
        if p.mode == "image2image":
            common["strength"] = p.strength
        return [
            Variant(
                stage=self.name,
                config=shift_config(shift),
                params={
                    "shift": shift,
                    **common,
                    "sliders": {s.class_name or "*": s.path for s in p.sliders if s.shift == shift},
                },
            )
            for shift in shifts
        ]

    def outputs_per_input(self, variant: Variant) -> int:
        return len(self.params.scales)

    def weight_hashes(self) -> dict[str, str]:
        from stages.generative.models import model_weight_hashes, resolve_model_root, unet_weight_sha256
        from stages.generative.sliders import check_slider_base, read_slider, slider_layers

        p = self.params
        try:
            hashes = model_weight_hashes(p.model, p.revision)
            base = unet_weight_sha256(p.model, p.revision)
            root, _ = resolve_model_root(p.model, p.revision)
        except (OSError, ValueError) as exc:
            raise ValueError(f"nuisance.model: {exc}") from None
        for j, spec in enumerate(p.sliders):
            key = f"slider/{shift_config(spec.shift)}/{spec.class_name or '*'}/{Path(spec.path).name}"
            if spec.train is not None and not Path(spec.path).expanduser().exists():
                hashes[key] = "untrained"  # a build trains it before planning, so only `plan` sees this
                continue
            try:
                slider = read_slider(spec.path)
                check_slider_base(slider, base, p.model)
                slider_layers(slider, root)
            except (OSError, ValueError) as exc:
                raise ValueError(f"nuisance.sliders[{j}].path: {exc}") from None
            hashes[key] = slider.sha256
        return hashes

    def preparations(self) -> list[Preparation]:
        """One slider training per slider entry with `train:`."""
        from stages.generative.slider_training import train_slider_file
        from stages.generative.sliders import slider_record

        preparations = []
        for spec in self.params.sliders:
            if spec.train is None:
                continue
            config = self.training_config(spec)
            fingerprint = self.training_fingerprint(config)
            preparations.append(
                Preparation(
                    id=f"nuisance/slider/{shift_config(spec.shift)}/{shift_config(spec.class_name or '')}",
                    output=spec.path,
                    fingerprint=fingerprint,
                    run=functools.partial(train_slider_file, config, fingerprint),
                    record=functools.partial(slider_record, spec.path),
                    resources=gpu_resources(self.params.device),
                )
            )
        return preparations

    def training_config(self, spec: SliderSpec) -> dict[str, Any]:
        """SliderTrainingConfig fields for a slider entry: the stage's model and
        prompt, with the class's prompt text where generation uses it."""
        p = self.params
        text = p.class_prompts.get(spec.class_name, spec.class_name)
        fill = lambda template: template.replace("{class}", text)  # noqa: E731
        settings = spec.train.model_dump()
        path = Path(spec.path)
        return {
            **settings,
            "model": p.model,
            "revision": p.revision,
            "class_name": spec.class_name,
            "shift": spec.shift,
            "out_dir": str(path.parent),
            "file_name": path.name,
            "device": p.device,
            "target_prompt": fill(settings["target_prompt"]),
            "positive_prompt": fill(settings["positive_prompt"]),
            "unconditional_prompt": fill(settings["unconditional_prompt"]),
        }

    def training_fingerprint(self, config: dict[str, Any]) -> str:
        """Digest of what a trained slider depends on: base weights, class, shift,
        prompts, settings; not where it is written nor the device it trains on."""
        from stages.generative.models import model_weight_hashes

        try:
            weights = sorted(model_weight_hashes(self.params.model, self.params.revision).values())
        except (OSError, ValueError) as exc:
            raise ValueError(f"nuisance.model: {exc}") from None
        ignored = {"model", "revision", "out_dir", "file_name", "device"}
        inputs = {k: v for k, v in config.items() if k not in ignored}
        payload = {"schema": TRAINING_SCHEMA, "base_weights": weights, **inputs}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def check_source(self, description: dict[str, Any]) -> None:
        """Every slider's class must be one the source renders (when the source names its classes)."""
        classes = [str(c) for c in description.get("classes") or []]
        if not classes:
            return
        for j, slider in enumerate(self.params.sliders):
            if slider.class_name is not None and slider.class_name not in classes:
                raise ValueError(
                    f"sliders[{j}].class_name {slider.class_name!r} is not a class of the source ({sorted(classes)})"
                )

    def slider_for(self, shift: str, class_name: str | None) -> SliderSpec | None:
        by_class = {s.class_name: s for s in self.params.sliders if s.shift == shift}
        return by_class.get(class_name) or by_class.get(None)

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        """Every ok input becomes its trajectory (all scales); inputs are
        rendered `trajectory_batch` at a time. A failure turns every scale of
        the trajectories it hit into error rows."""
        from stages.generative.sampling import EvalCounter
        from stages.generative.trajectories import render_jobs

        shift = variant.params["shift"]
        parts: list[Batch] = []
        jobs: dict[int, tuple[Any, SliderSpec]] = {}
        for i in range(len(batch)):
            if batch.status[i] != "ok":
                parts.append(batch.select([i]))
                continue
            class_name = batch.meta[i].get("class_name")
            if class_name is None and batch.labels[i] is not None:
                class_name = str(batch.labels[i])
            parts.append(self._scaled_copies(batch, i, variant, class_name))
            try:
                slider = self.slider_for(shift, class_name)
                if slider is None:
                    raise ValueError(f"no slider for class {class_name!r} in shift {shift!r}")
                jobs[len(parts) - 1] = (self._job(batch, i, class_name, slider), slider)
            except Exception as exc:  # noqa: BLE001 - a failed generation is an error row, not a crash
                fail_all(parts[-1], exc)
        if jobs:
            p = self.params
            model = self._model()
            results = render_jobs(
                model, [job for job, _ in jobs.values()], list(p.scales), p.start_noise, p.sampler,
                p.trajectory_batch, EvalCounter(),
            )
            for (k, (_, slider)), images in zip(jobs.items(), results):
                if isinstance(images, Exception):
                    fail_all(parts[k], images)
                    continue
                parts[k].images = list(images)
                for j in range(len(parts[k])):
                    parts[k].shift[j]["slider_sha256"] = self._slider_sha(slider)
        return Batch.concat(parts) if parts else batch

    def _scaled_copies(self, batch: Batch, i: int, variant: Variant, class_name: str | None) -> Batch:
        scales = self.params.scales
        key = batch.keys[i]
        trajectory = f"{variant.config}-{key}"
        seed = self.noise_seed(batch, i)
        return Batch(
            keys=[f"{key}-{scale_tag(s)}" for s in scales],
            images=[None] * len(scales),
            seeds=[batch.seeds[i]] * len(scales),
            source_keys=[batch.source_keys[i]] * len(scales),
            labels=[batch.labels[i]] * len(scales),
            meta=[dict(batch.meta[i]) for _ in scales],
            shift=[
                {
                    **batch.shift[i],
                    "trajectory": trajectory,
                    "scale": float(s),
                    "scale_index": j,
                    "class_name": class_name,
                    "shift_name": variant.params["shift"],
                    "noise_seed": seed,
                }
                for j, s in enumerate(scales)
            ],
        )

    @staticmethod
    def noise_seed(batch: Batch, i: int) -> int:
        """The prompts source names the generation seed (shared by every
        slider, as in CNS-Bench); image inputs use the per-sample seed."""
        seed = batch.meta[i].get("seed")
        return int(seed) if isinstance(seed, int) else int(batch.seeds[i])

    def _job(self, batch: Batch, i: int, class_name: str | None, slider: SliderSpec) -> Any:
        from stages.generative.sampling import GenerationRequest, as_rgb, fit_size, resize_image
        from stages.generative.trajectories import TrajectoryJob

        p = self.params
        model = self._model()
        adapter = self._adapter(model, slider)
        side = p.resolution or model.native_size
        text = p.class_prompts.get(class_name, class_name) if class_name is not None else ""
        if "{class}" in p.prompt and not text:
            raise ValueError("the prompt needs a class name but the sample has none")
        source = batch.images[i]
        out_size = (p.output_size, p.output_size) if p.output_size else None
        if p.mode == "image2image":
            if source is None:
                raise ValueError("image2image needs source pixels; this item has none")
            height, width = fit_size(*source.shape[:2], side, model.size_multiple)
            init = resize_image(as_rgb(source), height, width)
            out_size = out_size or tuple(source.shape[:2])
        else:
            height = width = fit_size(side, side, side, model.size_multiple)[0]
            init = None
        request = GenerationRequest(
            prompt=p.prompt.format(**{"class": text}),
            negative_prompt=p.negative_prompt,
            seed=self.noise_seed(batch, i),
            height=height,
            width=width,
            steps=p.steps,
            guidance_scale=p.guidance_scale,
            init_image=init,
            strength=p.strength,
        )
        return TrajectoryJob(request=request, adapter=adapter, out_size=out_size)

    def _model(self) -> Any:
        from stages.generative.models import load_model
        from stages.generative.spec import resolve_device

        device, dtype = resolve_device(self.params.device, self.params.dtype)
        return load_model(self.params.model, self.params.revision, device, dtype)

    def _adapter(self, model: Any, slider: SliderSpec) -> str:
        from stages.generative.models import unet_weight_sha256
        from stages.generative.sliders import check_slider_base, ensure_slider_loaded, read_slider

        # keyed by content: a slider retrained at the same path is a new adapter
        loaded = read_slider(slider.path)
        if loaded.sha256 not in self._adapters:
            check_slider_base(
                loaded, unet_weight_sha256(self.params.model, self.params.revision), self.params.model
            )
            self._adapters[loaded.sha256] = ensure_slider_loaded(model, loaded)
        return self._adapters[loaded.sha256]

    def _slider_sha(self, slider: SliderSpec) -> str:
        from stages.generative.sliders import read_slider

        return read_slider(slider.path).sha256


def fail_all(out: Batch, exc: Exception) -> None:
    for j in range(len(out)):
        out.fail(j, f"nuisance: {type(exc).__name__}: {str(exc)[:300]}")


STAGE = NuisanceStage
