"""`shiftforge train-slider` (one LoRA slider per class and shift) and `shiftforge convert-slider`
(a CNS-Bench LoRANetwork slider as a diffusers/peft LoRA file)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    from stages.generative.spec import SliderTrainingSettings

    d = SliderTrainingSettings()
    p = sub.add_parser(
        "train-slider",
        help="train a LoRA slider (Concept Sliders objective) for a class and a shift",
        description="Train a LoRA slider for one class and one shift with the Concept Sliders objective "
        "on a local diffusers model (no download). Writes <class>-<shift>.safetensors "
        "(diffusers/peft LoRA format) and a .json of its training provenance into --out. "
        "Defaults follow CNS-Bench: rank 4, alpha 1, AdamW 2e-4, 400 steps, batch 16, 512 px, eta 4, "
        "prompts target = neutral = unconditional = '{class}', positive '{class}, in {shift}', CFG 7.5 "
        "while reaching x_t, self-attention + resnet/sampler layers. A usable slider needs about that "
        "much training; a short run at lr 2e-4 barely changes an image (try lr 1e-2 for smoke tests).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="local diffusers folder or a repo id in the local HF cache")
    p.add_argument("--revision", default=None, help="HF cache revision of --model")
    p.add_argument("--class", dest="class_name", required=True, help="class name, e.g. 'goldfish'")
    p.add_argument("--shift", required=True, help="shift text, e.g. 'heavy snow'")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--steps", type=int, default=d.steps, help="optimisation steps")
    p.add_argument("--rank", type=int, default=d.rank, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=d.alpha, help="LoRA alpha")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    p.add_argument("--eta", type=float, default=d.eta, help="guidance eta of the slider target")
    p.add_argument("--resolution", type=int, default=d.resolution, help="training resolution in px")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="latents per step")
    p.add_argument("--denoise-steps", type=int, default=d.denoise_steps, help="schedule length used to reach x_t")
    p.add_argument("--prompt", default=d.target_prompt, help="target/neutral prompt template")
    p.add_argument("--positive", default=d.positive_prompt, help="positive prompt template")
    p.add_argument("--unconditional", default=d.unconditional_prompt, help="unconditional prompt template")
    p.add_argument(
        "--sample-guidance", type=float, default=d.sample_guidance, help="CFG while denoising to x_t"
    )
    p.add_argument(
        "--target-set",
        choices=["cns", "all-blocks"],
        default=d.target_set,
        help="layers the LoRA adapts: cns = self-attention + resnet/sampler layers (CNS-Bench); "
        "all-blocks = every down/mid/up layer except cross-attention",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (pinned: many threads on a busy machine crawl)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every random draw of the training")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    p.set_defaults(func=run_train_slider)
    add_convert_command(sub)


def run_train_slider(args: argparse.Namespace) -> int:
    from stages.base import UsageError

    checks = {
        "--steps": args.steps >= 1,
        "--rank": args.rank >= 1,
        "--lr": args.lr > 0,
        "--batch-size": args.batch_size >= 1,
        "--denoise-steps": args.denoise_steps >= 2,
        "--resolution": args.resolution >= 8,
        "--threads": args.threads >= 1,
        "--sample-guidance": args.sample_guidance >= 0,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise UsageError(f"train-slider: out-of-range value for {', '.join(bad)}")
    from stages.generative.models import resolve_model_root

    try:
        resolve_model_root(args.model, args.revision)
    except FileNotFoundError as exc:
        raise UsageError(f"train-slider --model: {exc}") from None
    import torch

    from stages.generative.slider_training import SliderTrainingConfig, train_slider

    torch.set_num_threads(args.threads)
    config = SliderTrainingConfig(
        model=args.model,
        revision=args.revision,
        class_name=args.class_name,
        shift=args.shift,
        out_dir=args.out,
        steps=args.steps,
        rank=args.rank,
        alpha=args.alpha,
        lr=args.lr,
        eta=args.eta,
        resolution=args.resolution,
        batch_size=args.batch_size,
        denoise_steps=args.denoise_steps,
        target_prompt=args.prompt,
        positive_prompt=args.positive,
        unconditional_prompt=args.unconditional,
        sample_guidance=args.sample_guidance,
        target_set=args.target_set,
        seed=args.seed,
        device=args.device,
    )
    every = max(1, args.steps // 20)
    report = lambda step, loss: (
        (step % every == 0 or step == args.steps - 1)
        and print(f"step {step + 1}/{args.steps} loss {loss:.6f}", file=sys.stderr)
    )
    try:
        result = train_slider(config, on_step=report)
    except Exception as exc:  # noqa: BLE001 - one-line summary, exit 1
        print(f"train-slider failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary = {
        "slider": str(result.path),
        "sha256": result.provenance["adapter_sha256"],
        "probe_loss": result.provenance["probe_loss"],
        "seconds": result.provenance["seconds"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def add_convert_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-slider",
        help="convert a CNS-Bench (Concept Sliders LoRANetwork) slider to a diffusers LoRA safetensors",
        description="Convert a CNS-Bench / Concept Sliders LoRANetwork slider (.pt or .safetensors with "
        "lora_unet_… keys) into a diffusers/peft LoRA .safetensors plus a .json recording the source "
        "file's sha256 and the base model. Every layer is checked against the model's UNet.",
    )
    p.add_argument("slider", type=Path, help="LoRANetwork slider file (.pt or .safetensors)")
    p.add_argument("--model", required=True, help="the base model: local diffusers folder or cached HF repo id")
    p.add_argument("--revision", default=None, help="HF cache revision of --model")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.set_defaults(func=run_convert_slider)


def run_convert_slider(args: argparse.Namespace) -> int:
    from stages.base import UsageError
    from stages.generative.convert import convert, provenance_base
    from stages.generative.models import resolve_model_root
    from stages.generative.sliders import read_slider, slider_layers

    if args.out.suffix != ".safetensors":
        raise UsageError(f"convert-slider --out: expected a .safetensors path, got {str(args.out)!r}")
    if args.out.resolve() == args.slider.resolve():
        raise UsageError("convert-slider --out: must differ from the input file")
    try:
        root, revision = resolve_model_root(args.model, args.revision)
        slider = read_slider(args.slider)
        if slider.format != "lora-network":
            raise ValueError(f"slider {args.slider.name!r} is already a diffusers/peft LoRA file")
        layers = slider_layers(slider, root)
    except (OSError, ValueError) as exc:
        raise UsageError(f"convert-slider: {exc}") from None
    record = convert(slider, layers, args.out, provenance_base(args.model, revision, root))
    print(json.dumps({"slider": str(args.out), "sha256": record["adapter_sha256"], "layers": len(layers)}))
    return 0
