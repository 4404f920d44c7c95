"""Training a LoRA slider with the Concept Sliders objective (REFERENCE §3).

For a class c and a shift s, with CNS-Bench's prompts target = neutral =
unconditional = "c" and positive = "c, in s", each step:

1. draws noise and denoises it with the current slider for a random number k
   of a `denoise_steps` schedule (CFG `sample_guidance`, 7.5, against the
   unconditional prompt), giving x_t at that schedule's t_k;
2. asks the frozen base model for ε(x_t, neutral), ε(x_t, positive),
   ε(x_t, unconditional) and forms the goal ε_n + η (ε_p − ε_u);
3. regresses ε_LoRA(x_t, target) onto the goal (MSE), AdamW on the LoRA only.

The LoRA (rank 4, alpha 1) sits on a named target set (`lora_network`):
`cns` (default) = self-attention + resnet/sampler layers, as CNS-Bench;
`all-blocks` adds proj_in/proj_out and the feed-forward layers. Progress is
also measured on a fixed probe set of (x_t, t) drawn before training, so
"the loss went down" is not noise.

A usable slider needs the scale of CNS-Bench's run (400 steps, batch 16,
512 px, lr 2e-4 on SD2): a few dozen steps at that learning rate move the
LoRA B weights off zero by ~lr × steps and change pixels by well under one
level; short smoke runs need a larger `lr` (e.g. 1e-2) to see an effect.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from stages.generative.lora_network import target_modules
from stages.generative.models import DiffusionModel, load_fresh_model, model_weight_hashes, unet_weight_sha256
from stages.generative.sampling import EvalCounter, Lane, denoise_step, encode_prompts
from stages.generative.sliders import LoraOff, slider_record
from stages.generative.spec import SliderTrainingSettings, resolve_device

ADAPTER = "slider"
SCHEMA = "shiftforge.slider/1"
_DEFAULTS = SliderTrainingSettings()


@dataclass(frozen=True)
class SliderTrainingConfig:
    model: str
    class_name: str
    shift: str
    out_dir: Path
    revision: str | None = None
    steps: int = _DEFAULTS.steps
    rank: int = _DEFAULTS.rank
    alpha: float = _DEFAULTS.alpha
    lr: float = _DEFAULTS.lr
    eta: float = _DEFAULTS.eta
    resolution: int = _DEFAULTS.resolution
    batch_size: int = _DEFAULTS.batch_size
    denoise_steps: int = _DEFAULTS.denoise_steps
    sample_guidance: float = _DEFAULTS.sample_guidance
    target_prompt: str = _DEFAULTS.target_prompt
    positive_prompt: str = _DEFAULTS.positive_prompt
    unconditional_prompt: str = _DEFAULTS.unconditional_prompt
    target_set: str = _DEFAULTS.target_set
    seed: int = _DEFAULTS.seed
    device: str = "auto"
    probe_size: int = 4
    file_name: str | None = None  # default: slider_file_name(class_name, shift)

    def prompts(self) -> dict[str, str]:
        fill = lambda text: text.replace("{class}", self.class_name).replace("{shift}", self.shift)
        target = fill(self.target_prompt)
        return {
            "target": target,
            "neutral": target,
            "positive": fill(self.positive_prompt),
            "unconditional": fill(self.unconditional_prompt),
        }

    def output_path(self) -> Path:
        return Path(self.out_dir) / (self.file_name or slider_file_name(self.class_name, self.shift))


@dataclass
class SliderTrainingResult:
    path: Path
    provenance: dict[str, Any]
    losses: list[float] = field(default_factory=list)


def slider_file_name(class_name: str, shift: str) -> str:
    slug = lambda text: re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"
    return f"{slug(class_name)}-{slug(shift)}.safetensors"


def slider_target_modules(unet: Any, target_set: str = _DEFAULTS.target_set) -> list[str]:
    """Sorted names of the layers a slider adapts (see `lora_network`)."""
    return target_modules(unet, target_set)


def add_slider_adapter(
    unet: Any, rank: int, alpha: float, random_init: bool = False, target_set: str = _DEFAULTS.target_set
) -> Any:
    """Attach a fresh LoRA named `slider`; returns its LoraConfig. LoRA B starts
    at zero (the slider starts as the identity) unless `random_init`."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=slider_target_modules(unet, target_set),
        init_lora_weights=not random_init,
    )
    unet.add_adapter(config, adapter_name=ADAPTER)
    return config


def save_slider(unet: Any, config: Any, path: Path, provenance: dict[str, Any]) -> str:
    """Write `<path>` (diffusers LoRA safetensors) atomically and `<path>.json`; returns the file sha256."""
    from peft.utils import get_peft_model_state_dict

    from stages.generative.models import file_sha256

    path.parent.mkdir(parents=True, exist_ok=True)
    # peft key names (`<module>.lora_A.weight`), which diffusers' loader reads as they are
    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    write_lora_file(path, state, config.to_dict())
    sha = file_sha256(path)
    sidecar = path.with_suffix(".json")
    partial = sidecar.with_name(sidecar.name + ".partial")
    partial.write_text(json.dumps({**provenance, "adapter_sha256": sha}, indent=2, sort_keys=True) + "\n")
    os.replace(partial, sidecar)
    return sha


def write_lora_file(path: Path, state: dict[str, Any], config: dict[str, Any]) -> None:
    """Write a diffusers LoRA safetensors atomically. Sets in the LoRA config
    (peft keeps target_modules as one) become sorted lists, so the header,
    and with it the file's sha256, is the same on every run."""
    from diffusers import StableDiffusionPipeline

    metadata = {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.items()}
    partial = path.with_name(path.name + ".partial")
    StableDiffusionPipeline.save_lora_weights(
        save_directory=str(path.parent),
        unet_lora_layers=state,
        weight_name=partial.name,
        unet_lora_adapter_metadata=metadata,
    )
    canonical_header(partial)
    os.replace(partial, path)


def canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted: safetensors
    writes the metadata map in hash order, which differs between runs."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])


def slider_loss(
    model: DiffusionModel, x_t: torch.Tensor, t: torch.Tensor, embeds: dict[str, torch.Tensor], eta: float
) -> torch.Tensor:
    """MSE(ε_LoRA(x_t, target), ε(x_t, neutral) + η (ε(x_t, positive) − ε(x_t, unconditional)))."""
    n = x_t.shape[0]
    with torch.no_grad(), LoraOff(model.unet):
        context = torch.cat([embeds[k].expand(n, -1, -1) for k in ("neutral", "positive", "unconditional")])
        neutral, positive, uncond = model.unet(
            torch.cat([x_t] * 3), t, encoder_hidden_states=context
        ).sample.chunk(3)
        goal = neutral + eta * (positive - uncond)
    prediction = model.unet(x_t, t, encoder_hidden_states=embeds["target"].expand(n, -1, -1)).sample
    return torch.nn.functional.mse_loss(prediction.float(), goal.float())


@torch.no_grad()
def noisy_latents(
    model: DiffusionModel,
    cfg: SliderTrainingConfig,
    embeds: dict[str, torch.Tensor],
    generator: torch.Generator,
    batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t after k random steps of sampling the target prompt with the current slider, and t_k."""
    scheduler = model.new_scheduler()
    scheduler.set_timesteps(cfg.denoise_steps, device=model.device)
    k = int(torch.randint(1, max(cfg.denoise_steps, 2), (1,), generator=generator))
    k = min(k, len(scheduler.timesteps) - 1)
    side = cfg.resolution // model.vae_scale_factor
    shape = (batch, model.unet.config.in_channels, side, side)
    latents = torch.randn(shape, generator=generator).to(model.device) * scheduler.init_noise_sigma
    guide = embeds["target"]
    if cfg.sample_guidance > 1.0:
        guide = torch.cat([embeds["unconditional"], guide])
    lane = [Lane(scheduler, generator)]
    for t in scheduler.timesteps[:k]:
        latents = denoise_step(model, lane, latents, t, guide, cfg.sample_guidance, EvalCounter())
    return latents, scheduler.timesteps[k]


def probe_loss(
    model: DiffusionModel,
    probes: list[tuple[torch.Tensor, torch.Tensor]],
    embeds: dict[str, torch.Tensor],
    eta: float,
) -> float:
    with torch.no_grad():
        return float(sum(slider_loss(model, x, t, embeds, eta) for x, t in probes) / len(probes))


def train_slider(
    cfg: SliderTrainingConfig,
    on_step: Callable[[int, float], None] | None = None,
    record: dict[str, Any] | None = None,
) -> SliderTrainingResult:
    """Train, then save the slider and its training provenance (plus `record`)."""
    started = time.perf_counter()
    device, dtype = resolve_device(cfg.device, "float32")  # LoRA training runs in float32
    model = load_fresh_model(cfg.model, cfg.revision, device, dtype)
    with torch.random.fork_rng(devices=[]):  # peft draws LoRA A from the global generator
        torch.manual_seed(cfg.seed)
        config = add_slider_adapter(model.unet, cfg.rank, cfg.alpha, target_set=cfg.target_set)
    trainable = [p for p in model.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr)
    prompts = cfg.prompts()
    embeds = {name: encode_prompts(model, [text]) for name, text in prompts.items()}
    probe_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    probes = [noisy_latents(model, cfg, embeds, probe_gen, 1) for _ in range(cfg.probe_size)]
    before = probe_loss(model, probes, embeds, cfg.eta)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in range(cfg.steps):
        x_t, t = noisy_latents(model, cfg, embeds, generator, cfg.batch_size)
        loss = slider_loss(model, x_t, t, embeds, cfg.eta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
        if on_step is not None:
            on_step(step, losses[-1])
    after = probe_loss(model, probes, embeds, cfg.eta)
    provenance = training_provenance(
        cfg, model, prompts, losses, (before, after), len(trainable), time.perf_counter() - started
    ) | (record or {})
    path = cfg.output_path()
    sha = save_slider(model.unet, config, path, provenance)
    return SliderTrainingResult(path=path, provenance={**provenance, "adapter_sha256": sha}, losses=losses)


def training_provenance(
    cfg: SliderTrainingConfig,
    model: DiffusionModel,
    prompts: dict[str, str],
    losses: list[float],
    probe: tuple[float, float],
    n_tensors: int,
    seconds: float,
) -> dict[str, Any]:
    import diffusers
    import peft

    from stages import __version__

    tenth = max(1, len(losses) // 10)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    return {
        "schema": SCHEMA,
        "class_name": cfg.class_name,
        "shift": cfg.shift,
        "prompts": prompts,
        "objective": "concept-sliders: eps_lora(x_t, target) ~ eps(x_t, neutral) "
        "+ eta * (eps(x_t, positive) - eps(x_t, unconditional))",
        "settings": {**settings, "optimizer": "AdamW"},
        "target_set": cfg.target_set,
        "lora_tensors": n_tensors,
        "base_model": {
            "model": cfg.model,
            "revision": model.revision,
            "unet_sha256": unet_weight_sha256(cfg.model, cfg.revision),
            "weights": model_weight_hashes(cfg.model, cfg.revision),
        },
        "loss": {
            "first": losses[0] if losses else None,
            "last": losses[-1] if losses else None,
            "mean_first_tenth": sum(losses[:tenth]) / tenth if losses else None,
            "mean_last_tenth": sum(losses[-tenth:]) / tenth if losses else None,
        },
        "probe_loss": {"before": probe[0], "after": probe[1]},
        "device": model.device,
        "seconds": round(seconds, 3),
        "versions": {
            "shiftforge": __version__,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
        },
    }


def train_slider_file(config: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """Train the slider `config` (SliderTrainingConfig fields) describes and
    record `fingerprint` in its provenance; returns its `slider_record`."""
    cfg = SliderTrainingConfig(**config)
    train_slider(cfg, record={"training_fingerprint": fingerprint})
    record = slider_record(cfg.output_path())
    if record is None:
        raise RuntimeError(f"slider {str(cfg.output_path())!r}: training finished but the file is unreadable")
    return record
