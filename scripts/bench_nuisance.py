"""Benchmark: slider trajectories on a Stable-Diffusion-2-architecture pipeline.

Builds SD2's UNet, VAE and text encoder from their published configs with
random weights (nothing is downloaded; images are noise, the cost is real),
adds one random rank-4 LoRA per shift on CNS-Bench's target set, and renders
every (seed, shift) trajectory three ways:

- plain: every scale runs every step on its own (CNS-Bench's loop);
- branched: one trajectory at a time, slider-free prefix once, scale 0 as
  the base model, the other scales in one UNet call per step;
- shared+batched: all seeds of a shift in one batch, and the prefix and
  scale 0 reused by every later shift (`trajectories.PrefixCache`).

Reports images/s, UNet sample-evaluations (CFG counts two), peak memory and
the largest pixel difference to plain, plus the evaluations the three modes
need at CNS-Bench scale (100 classes × 14 shifts × 50 seeds, 50 steps).

    python scripts/bench_nuisance.py --size 64 --steps 6        # CPU, small
    python scripts/bench_nuisance.py --device cuda --dtype bfloat16 --size 512 --steps 50 --seeds 25

Writes scripts/results/nuisance[-<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALES = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
SD2_UNET = dict(  # stabilityai/stable-diffusion-2 unet/config.json
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True, norm_num_groups=32,
)
SD2_VAE = dict(  # vae/config.json
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, sample_size=768,
)
SD2_TEXT = dict(  # text_encoder/config.json (OpenCLIP ViT-H/14 text tower)
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)


def build_sd2(device: str, dtype: str):
    """An in-memory DiffusionModel with SD2's architecture and random weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from stages.generative.models import DiffusionModel
    from tests.tiny_models import write_tiny_tokenizer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer(f"{tmp}/vocab.json", f"{tmp}/merges.txt", model_max_length=77,
                                  pad_token="<|endoftext|>")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="v_prediction")
    parts = {"unet": UNet2DConditionModel(**SD2_UNET), "vae": AutoencoderKL(**SD2_VAE),
             "text_encoder": CLIPTextModel(CLIPTextConfig(**SD2_TEXT))}
    for module in parts.values():
        module.to(device=device, dtype=getattr(torch, dtype)).eval().requires_grad_(False)
    return DiffusionModel(ref="sd2-random", root=Path("sd2-random"), revision=None, device=device, dtype=dtype,
                          tokenizer=tokenizer, scheduler=scheduler, **parts)


def add_random_sliders(model, n: int) -> list[str]:
    import torch
    from peft import LoraConfig

    from stages.generative.lora_network import target_modules

    targets = target_modules(model.unet, "cns")
    names = []
    for k in range(n):
        torch.manual_seed(100 + k)
        config = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
        model.unet.add_adapter(config, adapter_name=f"shift{k}")
        names.append(f"shift{k}")
    model.unet.to(device=model.device, dtype=model.torch_dtype)
    return names


def cns_scale_evals(steps: int, start_noise: int, n_scales: int, cfg: bool = True) -> dict[str, float]:
    """Millions of UNet sample-evaluations for 100 classes x 14 shifts x 50 seeds."""
    from diffusers import DDIMScheduler

    s = DDIMScheduler(steps_offset=1, set_alpha_to_one=False)
    s.set_timesteps(steps)
    off = int((s.timesteps > start_noise).sum())
    pairs, shifts, mult = 100 * 50, 14, 2 if cfg else 1
    plain = pairs * shifts * n_scales * steps
    branched = pairs * shifts * (off + n_scales * (steps - off))
    shared = pairs * (off + (steps - off)) + pairs * shifts * (n_scales - 1) * (steps - off)
    return {k: round(v * mult / 1e6, 2) for k, v in (("plain", plain), ("branched", branched), ("shared", shared))}


def run_mode(mode, model, requests, adapters, args, counter):
    from stages.generative.trajectories import PrefixCache, sample_batch, sample_trajectory

    cache = PrefixCache()
    images = {}
    for adapter in adapters:
        if mode == "shared+batched":
            out = sample_batch(model, requests, [adapter] * len(requests), SCALES, args.start_noise, counter, cache)
        elif mode == "branched":
            out = [sample_batch(model, [r], [adapter], SCALES, args.start_noise, counter)[0] for r in requests]
        else:
            out = [sample_trajectory(model, r, adapter, SCALES, args.start_noise, "plain", counter) for r in requests]
        images[adapter] = out
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in px (CNS-Bench: 512-768)")
    parser.add_argument("--steps", type=int, default=6, help="denoising steps (CNS-Bench: 50)")
    parser.add_argument("--start-noise", type=int, default=750)
    parser.add_argument("--seeds", type=int, default=2, help="trajectories per shift")
    parser.add_argument("--shifts", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--modes", default="plain,branched,shared+batched")
    parser.add_argument("--tag", default=None, help="result file suffix")
    args = parser.parse_args()

    import numpy as np
    import torch

    from stages.generative.sampling import EvalCounter, GenerationRequest

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = build_sd2(args.device, args.dtype)
    adapters = add_random_sliders(model, args.shifts)
    setup = time.perf_counter() - started
    requests = [
        GenerationRequest(prompt="a picture of a goldfish", negative_prompt="blurry", seed=seed,
                          height=args.size, width=args.size, steps=args.steps, guidance_scale=7.5)
        for seed in range(args.seeds)
    ]
    results, outputs = {}, {}
    for mode in args.modes.split(","):
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        counter = EvalCounter()
        t0 = time.perf_counter()
        outputs[mode] = run_mode(mode, model, requests, adapters, args, counter)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        n_images = args.seeds * args.shifts * len(SCALES)
        results[mode] = {
            "seconds": round(seconds, 2),
            "images_per_s": round(n_images / seconds, 3),
            "unet_sample_evals": counter.unet_samples,
            "unet_calls": counter.unet_calls,
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if args.device == "cuda" else None,
        }
        print(mode, json.dumps(results[mode]), file=sys.stderr, flush=True)
    if "plain" in outputs:
        for mode in outputs:
            diffs = [np.abs(a.astype(int) - b.astype(int)).max()
                     for adapter in adapters for a, b in zip(outputs[mode][adapter], outputs["plain"][adapter])]
            results[mode]["max_pixel_difference_to_plain"] = int(max(diffs))
            results[mode]["evals_vs_plain"] = round(
                results[mode]["unet_sample_evals"] / results["plain"]["unet_sample_evals"], 4)
    report = {
        "benchmark": "nuisance trajectories, SD2 architecture, random weights",
        "size_px": args.size, "steps": args.steps, "start_noise": args.start_noise, "scales": SCALES,
        "seeds": args.seeds, "shifts": args.shifts, "cfg": True, "device": args.device, "dtype": args.dtype,
        "threads": args.threads, "setup_seconds": round(setup, 1), "modes": results,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cns_scale_unet_evals_millions_50_steps": cns_scale_evals(50, args.start_noise, len(SCALES)),
        "machine": platform.machine(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
    }
    name = f"nuisance-{args.tag}.json" if args.tag else "nuisance.json"
    out = ROOT / "scripts" / "results" / name
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
