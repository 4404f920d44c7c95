"""Denoising loops for slider trajectories.

A trajectory is one (prompt, seed[, init image]) rendered at several slider
scales. The slider is off while t > start_noise, so those leading steps are
the same at every scale:

- `sample_plain`: the reference loop — every scale runs all steps on its own,
  the slider scale set through diffusers' adapter weights.
- `trajectories.sample_branched`: one trajectory through `sample_batch`: the
  shared prefix runs once, scale 0 runs as the base model, the other scales
  share each later UNet call with a per-sample LoRA scale.

Every latent row is a `Lane`: its own scheduler and its own noise generator
(seeded from the request; the same generator draws the initial noise and,
for stochastic schedulers such as DDPM or Euler ancestral, each step's
noise, as diffusers' pipelines do). So a row's result never depends on which
other rows share its UNet call, and a branch continues its parent's noise.
Both count UNet sample-evaluations (CFG doubles them) in an `EvalCounter`.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from stages.generative.models import DiffusionModel
from stages.generative.sliders import LoraOff

Sampler = Literal["branched", "plain"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str
    seed: int
    height: int
    width: int
    steps: int
    guidance_scale: float
    init_image: np.ndarray | None = None  # uint8 HxWx3 at (height, width) for image-to-image
    strength: float = 1.0

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale > 1.0


@dataclass
class EvalCounter:
    unet_calls: int = 0
    unet_samples: int = 0

    def add(self, batch: int) -> None:
        self.unet_calls += 1
        self.unet_samples += batch


@torch.no_grad()
def encode_prompts(model: DiffusionModel, prompts: list[str]) -> torch.Tensor:
    tok = model.tokenizer(
        prompts,
        padding="max_length",
        max_length=model.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return model.text_encoder(tok.input_ids.to(model.device))[0].to(model.torch_dtype)


def prompt_embeddings(model: DiffusionModel, request: GenerationRequest) -> torch.Tensor:
    """(2, L, D) = [negative, prompt] with CFG, else (1, L, D)."""
    if request.uses_cfg:
        return encode_prompts(model, [request.negative_prompt, request.prompt])
    return encode_prompts(model, [request.prompt])


@dataclass
class Lane:
    """The scheduler state and noise generator of one latent row."""

    scheduler: Any
    generator: torch.Generator

    def fork(self, n: int) -> list[Lane]:
        """n independent continuations of this lane (same state, same future noise)."""
        return [Lane(copy.deepcopy(self.scheduler), clone_generator(self.generator)) for _ in range(n)]


def clone_generator(generator: torch.Generator) -> torch.Generator:
    twin = torch.Generator(generator.device)
    twin.set_state(generator.get_state())
    return twin


def make_schedule(model: DiffusionModel, request: GenerationRequest) -> tuple[Lane, torch.Tensor]:
    """A lane with a fresh scheduler and the request's seeded generator, and
    the timesteps to run; image-to-image skips the first (1 - strength) of
    the schedule, as diffusers' img2img does."""
    scheduler = model.new_scheduler()
    scheduler.set_timesteps(request.steps, device=model.device)
    timesteps = scheduler.timesteps
    if request.init_image is not None:
        kept = min(int(request.steps * request.strength), request.steps)
        begin = (request.steps - kept) * scheduler.order
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
    return Lane(scheduler, torch.Generator("cpu").manual_seed(request.seed)), timesteps


@torch.no_grad()
def initial_latents(
    model: DiffusionModel, request: GenerationRequest, lane: Lane, timesteps: torch.Tensor
) -> torch.Tensor:
    """Noise drawn on the CPU from the lane's generator (identical on any
    device), scaled for text-to-image or added to the encoded init image."""
    f = model.vae_scale_factor
    shape = (1, model.unet.config.in_channels, request.height // f, request.width // f)
    noise = torch.randn(shape, generator=lane.generator, dtype=torch.float32)
    noise = noise.to(model.device, model.torch_dtype)
    if request.init_image is None:
        return noise * lane.scheduler.init_noise_sigma
    if len(timesteps) == 0:
        return encode_image(model, request.init_image)
    return lane.scheduler.add_noise(encode_image(model, request.init_image), noise, timesteps[:1])


@torch.no_grad()
def encode_image(model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    posterior = model.vae.encode(pixels.to(model.device, model.torch_dtype)).latent_dist
    return posterior.mean * model.vae.config.scaling_factor


@torch.no_grad()
def decode(model: DiffusionModel, latents: torch.Tensor) -> np.ndarray:
    """(N, H, W, 3) uint8."""
    pixels = model.vae.decode(latents / model.vae.config.scaling_factor).sample.float()
    pixels = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def denoise_step(
    model: DiffusionModel,
    lanes: list[Lane],
    latents: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    guidance: float,
    counter: EvalCounter,
) -> torch.Tensor:
    """One step of every row. `embeds` is [negatives..., prompts...] with one
    pair per row, or one pair for all rows; no negatives when guidance <= 1.
    One lane steps the whole batch; otherwise one lane per row."""
    n = latents.shape[0]
    cfg = guidance > 1.0
    pairs = embeds.shape[0] // (2 if cfg else 1)
    if pairs not in (1, n):
        raise ValueError(f"denoise_step: {pairs} prompt embeddings for {n} rows")
    x = torch.cat([latents, latents]) if cfg else latents
    x = lanes[0].scheduler.scale_model_input(x, t)
    context = embeds.repeat_interleave(n, dim=0) if pairs == 1 else embeds
    out = model.unet(x, t, encoder_hidden_states=context).sample
    counter.add(x.shape[0])
    if cfg:
        uncond, cond = out.chunk(2)
        out = uncond + guidance * (cond - uncond)
    if len(lanes) == 1:
        return scheduler_step(lanes[0], out, t, latents)
    if len(lanes) != n:
        raise ValueError(f"denoise_step: {len(lanes)} lanes for {n} rows")
    return torch.cat([scheduler_step(lane, out[i : i + 1], t, latents[i : i + 1]) for i, lane in enumerate(lanes)])


def scheduler_step(lane: Lane, out: torch.Tensor, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    step = lane.scheduler.step
    if "generator" in inspect.signature(step).parameters:
        return step(out, t, latents, generator=lane.generator).prev_sample
    return step(out, t, latents).prev_sample


def split_at_start_noise(timesteps: torch.Tensor, start_noise: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps with the slider off: t > start_noise, steps with it on)."""
    off = int((timesteps > start_noise).sum())
    return timesteps[:off], timesteps[off:]


def sample_plain(
    model: DiffusionModel,
    request: GenerationRequest,
    adapter: str,
    scale: float,
    start_noise: int,
    counter: EvalCounter,
) -> np.ndarray:
    """One scale, every step on its own: (1, H, W, 3) uint8."""
    unet = model.unet
    lane, timesteps = make_schedule(model, request)
    embeds = prompt_embeddings(model, request)
    latents = initial_latents(model, request, lane, timesteps)
    slider_off, slider_on = split_at_start_noise(timesteps, start_noise)
    with LoraOff(unet):
        for t in slider_off:
            latents = denoise_step(model, [lane], latents, t, embeds, request.guidance_scale, counter)
    unet.set_adapters([adapter], weights=[float(scale)])
    for t in slider_on:
        latents = denoise_step(model, [lane], latents, t, embeds, request.guidance_scale, counter)
    return decode(model, latents)


@torch.no_grad()
def sample_base(model: DiffusionModel, request: GenerationRequest, counter: EvalCounter) -> np.ndarray:
    """The base model alone (every adapter off): (1, H, W, 3) uint8."""
    lane, timesteps = make_schedule(model, request)
    embeds = prompt_embeddings(model, request)
    latents = initial_latents(model, request, lane, timesteps)
    with LoraOff(model.unet):
        for t in timesteps:
            latents = denoise_step(model, [lane], latents, t, embeds, request.guidance_scale, counter)
    return decode(model, latents)


def fit_size(height: int, width: int, longest: int, multiple: int) -> tuple[int, int]:
    """(h, w) with the longer side near `longest`, aspect kept, both multiples of `multiple`."""
    ratio = longest / max(height, width)
    fit = lambda side: max(multiple, int(round(side * ratio / multiple)) * multiple)
    return fit(height), fit(width)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]
