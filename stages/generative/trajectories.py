"""Slider trajectories in batches, with the slider-free work shared across shifts.

For N trajectories of one size and schedule (CNS-Bench batches 25 seeds per
call) and S scales:

1. prefix: the N rows with every slider off while t > start_noise, one UNet
   call per step;
2. scale 0, which is the base model: the N rows continue without any LoRA;
3. every other scale: N × (S−1) rows forked from the prefix, each row's LoRA
   update scaled per row (its own slider at its scale, any other slider at 0),
   one UNet call per step.

Steps 1 and 2 do not involve a slider, so for the same requests they are the
same in every shift. `PrefixCache` keeps their result per worker process,
keyed by the whole batch of requests; shards slice the source the same way in
every shift, so another shift's batch of the same items only runs step 3. A
batch has the same composition whether its prefix is cached or not, and each
row's noise comes from its own lane, so a hit gives the bytes a miss gives.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stages.generative.models import DiffusionModel
from stages.generative.sampling import (
    EvalCounter,
    GenerationRequest,
    Lane,
    Sampler,
    decode,
    denoise_step,
    initial_latents,
    make_schedule,
    prompt_embeddings,
    resize_image,
    sample_plain,
    split_at_start_noise,
)
from stages.generative.sliders import LoraOff, PerSampleLoraScale


@dataclass
class SharedWork:
    """Steps 1-2 of a batch: latents and lanes after the prefix, scale-0 images."""

    latents: torch.Tensor
    lanes: list[Lane]
    base_images: np.ndarray


class PrefixCache:
    """The last `capacity` batches' shared work in this process."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._entries: OrderedDict[str, SharedWork] = OrderedDict()

    def get(self, key: str) -> SharedWork | None:
        if key in self._entries:
            self._entries.move_to_end(key)
        return self._entries.get(key)

    def put(self, key: str, work: SharedWork) -> None:
        self._entries[key] = work
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


PREFIX_CACHE = PrefixCache()


def batch_key(model: DiffusionModel, requests: list[GenerationRequest], start_noise: int, scales: bool) -> str:
    digest = hashlib.sha256()
    identity = (model.ref, model.revision, str(model.root), model.device, model.dtype, id(model.unet))
    digest.update(repr((identity, start_noise, scales)).encode())
    for r in requests:
        digest.update(repr((r.prompt, r.negative_prompt, r.seed, r.height, r.width, r.steps)).encode())
        digest.update(repr((r.guidance_scale, r.strength, r.init_image is None)).encode())
        if r.init_image is not None:
            digest.update(np.ascontiguousarray(r.init_image).tobytes())
    return digest.hexdigest()


def batch_embeddings(model: DiffusionModel, requests: list[GenerationRequest], repeat: int = 1) -> torch.Tensor:
    """[negatives..., prompts...], each request's pair `repeat` times; every
    prompt is encoded on its own, so its embedding never depends on the batch."""
    pairs = [prompt_embeddings(model, r) for r in requests]
    parts = pairs[0].shape[0]
    return torch.cat([p[k : k + 1] for k in range(parts) for p in pairs for _ in range(repeat)])


@torch.no_grad()
def shared_work(
    model: DiffusionModel, requests: list[GenerationRequest], start_noise: int, with_base: bool, counter: EvalCounter
) -> SharedWork:
    """Steps 1 and 2: the slider-free prefix and, when asked, scale 0."""
    lanes, timesteps = [], None
    rows = []
    for request in requests:
        lane, timesteps = make_schedule(model, request)
        rows.append(initial_latents(model, request, lane, timesteps))
        lanes.append(lane)
    latents = torch.cat(rows)
    prefix, rest = split_at_start_noise(timesteps, start_noise)
    embeds, guidance = batch_embeddings(model, requests), requests[0].guidance_scale
    with LoraOff(model.unet):
        for t in prefix:
            latents = denoise_step(model, lanes, latents, t, embeds, guidance, counter)
        base = np.zeros((0,), dtype=np.uint8)
        if with_base:
            base_lanes, base_latents = [lane.fork(1)[0] for lane in lanes], latents
            for t in rest:
                base_latents = denoise_step(model, base_lanes, base_latents, t, embeds, guidance, counter)
            base = decode(model, base_latents)
    return SharedWork(latents=latents, lanes=lanes, base_images=base)


@torch.no_grad()
def sample_batch(
    model: DiffusionModel,
    requests: list[GenerationRequest],
    adapters: list[str],
    scales: list[float],
    start_noise: int,
    counter: EvalCounter,
    cache: PrefixCache | None = None,
) -> list[np.ndarray]:
    """One (len(scales), H, W, 3) uint8 array per request; request i uses the
    slider `adapters[i]`. All requests share size, steps, guidance, strength."""
    check_batch(requests, adapters)
    with_base = any(s == 0 for s in scales)
    key = batch_key(model, requests, start_noise, with_base)
    work = cache.get(key) if cache is not None else None
    if work is None:
        work = shared_work(model, requests, start_noise, with_base, counter)
        if cache is not None:
            cache.put(key, work)
    slid = [s for s in scales if s != 0]
    images = slider_rows(model, requests, adapters, slid, start_noise, work, counter) if slid else None
    out = []
    for i in range(len(requests)):
        by_scale = iter(images[i * len(slid) : (i + 1) * len(slid)] if slid else [])
        out.append(np.stack([work.base_images[i] if s == 0 else next(by_scale) for s in scales]))
    return out


def slider_rows(
    model: DiffusionModel,
    requests: list[GenerationRequest],
    adapters: list[str],
    slid: list[float],
    start_noise: int,
    work: SharedWork,
    counter: EvalCounter,
) -> np.ndarray:
    """Step 3: every (request, non-zero scale) row, trajectory-major."""
    _, timesteps = make_schedule(model, requests[0])
    _, rest = split_at_start_noise(timesteps, start_noise)
    k = len(slid)
    lanes = [lane for parent in work.lanes for lane in parent.fork(k)]
    latents = work.latents.repeat_interleave(k, dim=0)
    embeds = batch_embeddings(model, requests, repeat=k)
    guidance = requests[0].guidance_scale
    names = sorted(set(adapters))
    scale_of = torch.tensor(slid * len(requests), dtype=torch.float32, device=model.device)
    owner = [adapters[i // k] for i in range(len(lanes))]
    values = {a: scale_of * torch.tensor([o == a for o in owner], device=model.device) for a in names}
    if guidance > 1.0:
        values = {a: torch.cat([v, v]) for a, v in values.items()}
    with PerSampleLoraScale(model.unet, names) as lora:
        lora.values = values
        for t in rest:
            latents = denoise_step(model, lanes, latents, t, embeds, guidance, counter)
    return decode(model, latents)


def check_batch(requests: list[GenerationRequest], adapters: list[str]) -> None:
    if not requests or len(adapters) != len(requests):
        raise ValueError(f"sample_batch: {len(requests)} requests but {len(adapters)} adapters")
    shape = {batch_shape(r) for r in requests}
    if len(shape) != 1:
        raise ValueError(f"sample_batch: requests differ in size or schedule: {sorted(shape)}")


def batch_shape(request: GenerationRequest) -> tuple[Any, ...]:
    """What requests must share to be denoised in one batch."""
    init = request.init_image is not None
    return (request.height, request.width, request.steps, request.guidance_scale, init and request.strength)


@dataclass
class TrajectoryJob:
    """One trajectory to render: its request, its slider's adapter, and the
    (height, width) its images are resized to (None: as generated)."""

    request: GenerationRequest
    adapter: str
    out_size: tuple[int, int] | None = None


def render_jobs(
    model: DiffusionModel,
    jobs: list[TrajectoryJob],
    scales: list[float],
    start_noise: int,
    sampler: str,
    per_batch: int,
    counter: EvalCounter,
) -> list[np.ndarray | Exception]:
    """Images of every job, or the exception that failed its batch. Branched:
    consecutive jobs of one batch shape, `per_batch` at a time, in job order
    (so a batch's composition depends only on the jobs, never on workers)."""
    results: list[np.ndarray | Exception] = [RuntimeError("not rendered")] * len(jobs)
    for chunk in job_batches(jobs, 1 if sampler == "plain" else per_batch):
        try:
            if sampler == "plain":
                job = jobs[chunk[0]]
                images = [sample_trajectory(model, job.request, job.adapter, scales, start_noise, "plain", counter)]
            else:
                requests, adapters = [jobs[j].request for j in chunk], [jobs[j].adapter for j in chunk]
                images = sample_batch(model, requests, adapters, scales, start_noise, counter, PREFIX_CACHE)
        except Exception as exc:  # noqa: BLE001 - the caller turns it into error rows
            for j in chunk:
                results[j] = exc
            continue
        for j, stack in zip(chunk, images):
            size = jobs[j].out_size
            results[j] = stack if size is None else np.stack([resize_image(im, *size) for im in stack])
    return results


def job_batches(jobs: list[TrajectoryJob], per_batch: int) -> list[list[int]]:
    """Indices of jobs, grouped by batch shape in order of first appearance, chunked."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for j, job in enumerate(jobs):
        groups.setdefault(batch_shape(job.request), []).append(j)
    return [g[k : k + per_batch] for g in groups.values() for k in range(0, len(g), per_batch)]


def sample_branched(
    model: DiffusionModel,
    request: GenerationRequest,
    adapter: str,
    scales: list[float],
    start_noise: int,
    counter: EvalCounter,
) -> np.ndarray:
    """All scales of one trajectory: (len(scales), H, W, 3) uint8."""
    return sample_batch(model, [request], [adapter], scales, start_noise, counter)[0]


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
