"""Denoising loops for slider trajectories.

A trajectory is one (prompt, seed[, init image]) rendered at several slider
scales. The slider is off while t > start_noise, so those leading steps are
the same at every scale:

- `sample_plain`: the reference loop — every scale runs all steps on its own,
  the slider scale set through diffusers' adapter weights.
- `sample_branched`: the shared prefix runs once (batch 1), then the latents
  branch into one batch of all scales whose LoRA update is scaled per sample
  (`PerSampleLoraScale`), so each remaining step is a single UNet call.

Both count UNet sample-evaluations (CFG doubles them) in an `EvalCounter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from stages.generative.models import DiffusionModel
from stages.generative.sliders import LoraOff, PerSampleLoraScale

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


def make_schedule(model: DiffusionModel, request: GenerationRequest) -> tuple[Any, torch.Tensor]:
    """A fresh scheduler and the timesteps to run; image-to-image skips the
    first (1 - strength) of the schedule, as diffusers' img2img does."""
    scheduler = model.new_scheduler()
    scheduler.set_timesteps(request.steps, device=model.device)
    timesteps = scheduler.timesteps
    if request.init_image is not None:
        kept = min(int(request.steps * request.strength), request.steps)
        begin = (request.steps - kept) * scheduler.order
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
    return scheduler, timesteps


@torch.no_grad()
def initial_latents(
    model: DiffusionModel, request: GenerationRequest, scheduler: Any, timesteps: torch.Tensor
) -> torch.Tensor:
    """Noise drawn on the CPU from the request's seed (identical on any
    device), scaled for text-to-image or added to the encoded init image."""
    f = model.vae_scale_factor
    shape = (1, model.unet.config.in_channels, request.height // f, request.width // f)
    noise = torch.randn(
        shape, generator=torch.Generator("cpu").manual_seed(request.seed), dtype=torch.float32
    )
    noise = noise.to(model.device, model.torch_dtype)
    if request.init_image is None:
        return noise * scheduler.init_noise_sigma
    if len(timesteps) == 0:
        return encode_image(model, request.init_image)
    return scheduler.add_noise(encode_image(model, request.init_image), noise, timesteps[:1])


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
    scheduler: Any,
    latents: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    guidance: float,
    counter: EvalCounter,
) -> torch.Tensor:
    n = latents.shape[0]
    cfg = embeds.shape[0] == 2
    x = torch.cat([latents, latents]) if cfg else latents
    x = scheduler.scale_model_input(x, t)
    context = embeds.repeat_interleave(n, dim=0)  # [negative x n, prompt x n]
    out = model.unet(x, t, encoder_hidden_states=context).sample
    counter.add(x.shape[0])
    if cfg:
        uncond, cond = out.chunk(2)
        out = uncond + guidance * (cond - uncond)
    return scheduler.step(out, t, latents).prev_sample


def split_at_start_noise(timesteps: torch.Tensor, start_noise: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps with the slider off: t > start_noise, steps with it on)."""
    off = int((timesteps > start_noise).sum())
    return timesteps[:off], timesteps[off:]


def sample_branched(
    model: DiffusionModel,
    request: GenerationRequest,
    adapter: str,
    scales: list[float],
    start_noise: int,
    counter: EvalCounter,
) -> np.ndarray:
    """All scales of one trajectory: (len(scales), H, W, 3) uint8."""
    scheduler, timesteps = make_schedule(model, request)
    embeds = prompt_embeddings(model, request)
    latents = initial_latents(model, request, scheduler, timesteps)
    shared, branched = split_at_start_noise(timesteps, start_noise)
    with LoraOff(model.unet):
        for t in shared:
            latents = denoise_step(model, scheduler, latents, t, embeds, request.guidance_scale, counter)
    latents = latents.repeat(len(scales), 1, 1, 1)
    if len(branched):
        values = torch.tensor(scales, dtype=torch.float32, device=model.device)
        with PerSampleLoraScale(model.unet, adapter) as lora:
            lora.values = torch.cat([values, values]) if request.uses_cfg else values
            for t in branched:
                latents = denoise_step(model, scheduler, latents, t, embeds, request.guidance_scale, counter)
    return decode(model, latents)


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
    scheduler, timesteps = make_schedule(model, request)
    embeds = prompt_embeddings(model, request)
    latents = initial_latents(model, request, scheduler, timesteps)
    slider_off, slider_on = split_at_start_noise(timesteps, start_noise)
    with LoraOff(unet):
        for t in slider_off:
            latents = denoise_step(model, scheduler, latents, t, embeds, request.guidance_scale, counter)
    unet.set_adapters([adapter], weights=[float(scale)])
    for t in slider_on:
        latents = denoise_step(model, scheduler, latents, t, embeds, request.guidance_scale, counter)
    return decode(model, latents)


def sample_trajectory(
    model: DiffusionModel,
    request: GenerationRequest,
    adapter: str,
    scales: list[float],
    start_noise: int,
    sampler: Sampler,
    counter: EvalCounter,
) -> np.ndarray:
    if sampler == "branched":
        return sample_branched(model, request, adapter, scales, start_noise, counter)
    return np.concatenate([sample_plain(model, request, adapter, s, start_noise, counter) for s in scales])


@torch.no_grad()
def sample_base(model: DiffusionModel, request: GenerationRequest, counter: EvalCounter) -> np.ndarray:
    """The base model alone (every adapter off): (1, H, W, 3) uint8."""
    scheduler, timesteps = make_schedule(model, request)
    embeds = prompt_embeddings(model, request)
    latents = initial_latents(model, request, scheduler, timesteps)
    with LoraOff(model.unet):
        for t in timesteps:
            latents = denoise_step(model, scheduler, latents, t, embeds, request.guidance_scale, counter)
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
