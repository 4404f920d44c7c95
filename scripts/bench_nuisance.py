"""Benchmark: slider trajectories, branched sampler vs the plain per-scale loop.

Builds the tiny test pipeline (32 px) and a random slider in a temp folder,
renders the same trajectories with both samplers and reports UNet
sample-evaluations per trajectory, wall time (best of --repeats, alternating
the samplers) and the largest pixel difference between the two outputs.

    .venv/bin/python scripts/bench_nuisance.py [--steps 50] [--repeats 3] [--threads 1]

Writes scripts/results/nuisance.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALES = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (CNS-Bench: 50)")
    parser.add_argument("--start-noise", type=int, default=750)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trajectories", type=int, default=2, help="seeds per repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "scripts" / "results" / "nuisance.json")
    args = parser.parse_args()

    import numpy as np
    import torch

    from stages.generative.models import load_model
    from stages.generative.sampling import EvalCounter, GenerationRequest, sample_trajectory
    from stages.generative.sliders import ensure_slider_loaded, read_slider
    from tests.tiny_models import build_tiny_pipeline, write_random_slider

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_pipeline(Path(tmp) / "tiny-sd")
        slider = write_random_slider(model_dir, Path(tmp) / "slider.safetensors")
        model = load_model(str(model_dir), None, args.device, "float32")
        adapter = ensure_slider_loaded(model, read_slider(slider))
        requests = [
            GenerationRequest(
                prompt="a picture of a goldfish",
                negative_prompt="blurry",
                seed=seed,
                height=32,
                width=32,
                steps=args.steps,
                guidance_scale=7.5,
            )
            for seed in range(args.trajectories)
        ]
        sample_trajectory(model, requests[0], adapter, SCALES, args.start_noise, "branched", EvalCounter())
        best = {"branched": float("inf"), "plain": float("inf")}
        evals, images = {}, {}
        for _ in range(args.repeats):
            for sampler in ("plain", "branched"):
                counter = EvalCounter()
                started = time.perf_counter()
                images[sampler] = [
                    sample_trajectory(model, r, adapter, SCALES, args.start_noise, sampler, counter)
                    for r in requests
                ]
                best[sampler] = min(best[sampler], time.perf_counter() - started)
                evals[sampler] = counter.unet_samples // len(requests)
        diff = max(
            int(np.abs(a.astype(int) - b.astype(int)).max())
            for a, b in zip(images["branched"], images["plain"])
        )
    per_traj = {k: round(v / len(requests), 4) for k, v in best.items()}
    result = {
        "benchmark": "nuisance slider trajectories, tiny 32 px pipeline",
        "steps": args.steps,
        "start_noise": args.start_noise,
        "scales": SCALES,
        "cfg": True,
        "unet_sample_evals_per_trajectory": evals,
        "eval_ratio_branched_vs_plain": round(evals["branched"] / evals["plain"], 4),
        "seconds_per_trajectory": per_traj,
        "time_ratio_branched_vs_plain": round(per_traj["branched"] / per_traj["plain"], 4),
        "max_pixel_difference": diff,
        "device": args.device,
        "threads": args.threads,
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
