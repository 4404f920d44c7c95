"""Params every diffusion-backed stage shares, and where the model runs.

Nothing here imports torch at module level: manifest validation imports every
stage's params model and must stay light.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stages.base import ManifestPathOrId, StageParams

# CNS-Bench's negative prompt (REFERENCE §3).
NEGATIVE_PROMPT = "blurry,text,caption,lowquality,lowresolution,low res,grainy,ugly"
DEFAULT_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


class DiffusionParams(StageParams):
    """Which diffusers pipeline to load and how to run it."""

    model: ManifestPathOrId = Field(description="local diffusers folder, or a repo id already in the local HF cache")
    revision: str | None = Field(default=None, description="HF cache revision (commit, branch or tag)")
    device: DeviceName = Field(default="auto", description="auto: cuda when available, else cpu")
    dtype: DtypeName = Field(default="auto", description="auto: bfloat16 on cuda, float32 on cpu")
    steps: int = Field(default=50, ge=1, le=1000, description="denoising steps")
    guidance_scale: float = Field(
        default=7.5, ge=0, le=50, description="classifier-free guidance; <=1 disables"
    )
    negative_prompt: str = NEGATIVE_PROMPT
    resolution: int | None = Field(
        default=None,
        ge=8,
        le=4096,
        description="generation size in px (longer side for image-to-image); default: the native size",
    )

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must name a local diffusers folder or a cached HF repo id")
        return value


class SliderTrainingSettings(BaseModel):
    """How a slider is trained (Concept Sliders objective; CNS-Bench defaults,
    from its training script: target = neutral = unconditional = the class
    phrase, positive "{class}, in {shift}", x_t reached with the slider on and
    CFG 7.5 against the unconditional prompt): the `train:` entry of a
    manifest slider and the defaults of `train-slider`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(default=400, ge=1, description="optimisation steps")
    rank: int = Field(default=4, ge=1, description="LoRA rank")
    alpha: float = Field(default=1.0, gt=0, description="LoRA alpha")
    lr: float = Field(default=2e-4, gt=0, description="AdamW learning rate")
    eta: float = Field(default=4.0, description="guidance eta of the slider target")
    resolution: int = Field(default=512, ge=8, le=4096, description="training resolution in px")
    batch_size: int = Field(default=16, ge=1, description="latents per step")
    denoise_steps: int = Field(default=50, ge=2, description="schedule length used to reach x_t")
    sample_guidance: float = Field(
        default=7.5, ge=0, description="CFG while sampling x_t (negative = the unconditional prompt)"
    )
    target_prompt: str = Field(default="{class}", description="target = neutral prompt; template: {class}, {shift}")
    positive_prompt: str = Field(default="{class}, in {shift}", description="template: {class}, {shift}")
    unconditional_prompt: str = Field(default="{class}", description="template: {class}, {shift}")
    target_set: Literal["cns", "all-blocks"] = Field(
        default="cns",
        description="layers the LoRA adapts: cns = self-attention + resnet/sampler layers (CNS-Bench); "
        "all-blocks = every down/mid/up layer except cross-attention",
    )
    seed: int = Field(default=0, ge=0, description="seed of every random draw of the training")


def resolve_device(device: str, dtype: str) -> tuple[str, str]:
    """(device, dtype) for this process: auto means cuda+bfloat16 when a GPU is
    visible, else cpu+float32 (CPU half precision is slow and imprecise)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return device, dtype


def cuda_visible() -> bool:
    """Run on each Dask worker (`client.run(cuda_visible)`): whether this
    worker's process sees a CUDA device. A stage with `device: cuda` needs
    at least one such worker; the driver's own GPU does not count."""
    try:
        import torch
    except ModuleNotFoundError:
        return False
    return bool(torch.cuda.is_available())


def check_cuda_workers(device: str, visible_by_worker: dict[str, bool], field: str) -> None:
    """ValueError (bad input, before any work) when `device` is cuda and no worker sees CUDA."""
    if device == "cuda" and not any(visible_by_worker.values()):
        raise ValueError(
            f"{field}: device cuda, but none of the cluster's {len(visible_by_worker)} workers sees a CUDA device"
        )


def gpu_resources(device: str) -> dict[str, float]:
    """What a task of this stage needs from a Dask worker. `auto` resolves on
    the machine that asks, so a driver without a GPU places tasks anywhere."""
    if device == "cuda":
        return {"GPU": 1}
    if device == "auto":
        try:
            import torch
        except ModuleNotFoundError:
            return {}
        return {"GPU": 1} if torch.cuda.is_available() else {}
    return {}


def check_scales(scales: list[float]) -> list[float]:
    if not scales:
        raise ValueError("scales must list at least one slider scale, e.g. [0, 0.5, 1.0]")
    bad = [s for s in scales if not math.isfinite(s)]
    if bad:
        raise ValueError(f"scales must be finite numbers, got {bad}")
    tags = [scale_tag(s) for s in scales]
    if len(set(tags)) != len(tags):
        raise ValueError(f"scales must be distinct at 3 decimals, got {scales}")
    return scales


def scale_tag(scale: float) -> str:
    """Key suffix of a scale: 0.5 -> 's0p5', -1 -> 'sm1p0', 1.25 -> 's1p25'."""
    text = f"{abs(scale):.3f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return ("sm" if scale < 0 else "s") + text.replace(".", "p")
