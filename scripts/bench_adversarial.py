"""Benchmark: transfer of the adversarial stage's PGD from a surrogate to a held-out CNN.

Trains two tiny CNNs (the test suite's, from tests/tiny_classifiers.py) on
synthetic 32 px shapes with different seeds, saves the surrogate as
TorchScript and the held-out net as a `torch.export` program, then runs the
stage (plain PGD, L∞, untargeted) over a fresh set of shapes at each ε and
reports, per ε: surrogate and held-out accuracy clean vs adversarial, held-out
success, the same-norm baseline (every pixel ±ε at random, clipped to the pixel
range) and ms per image of the attack (best of --repeats, models loaded).

    .venv/bin/python scripts/bench_adversarial.py [--images 256] [--steps 10] [--threads 1]

Writes scripts/results/adversarial.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stages.adversarial import AdversarialParams, AdversarialStage  # noqa: E402
from stages.adversarial.transfer import transfer_summary  # noqa: E402
from stages.base import Batch  # noqa: E402
from tests.tiny_classifiers import (  # noqa: E402
    classifier_spec,
    predict,
    save_exported,
    save_scripted,
    shapes,
    train_shape_cnns,
)

SEEDS = {"surrogate": 0, "held_out": 1}  # the test suite's surrogate and held-out nets
TEST_SEED = 2  # training shapes use seed 1: the measured images are unseen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="synthetic test images")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[4, 8, 16], help="L∞ budgets in /255")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="timed attack runs per ε (figures from the last)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=ROOT / "scripts" / "results" / "adversarial.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    nets = train_shape_cnns(SEEDS)
    train_s = time.perf_counter() - started
    images, classes = shapes(args.images, seed=TEST_SEED)
    with tempfile.TemporaryDirectory() as tmp:
        specs = {"surrogate": classifier_spec(save_scripted(nets["surrogate"], Path(tmp) / "surrogate.pt"),
                                              "surrogate"),
                 "held_out": classifier_spec(save_exported(nets["held_out"], Path(tmp) / "held_out.pt2"),
                                             "held_out")}
        rows = {f"{eps:g}": measure_budget(specs, nets, images, classes, eps, args.steps, args.repeats)
                for eps in args.epsilons}
    summary = {
        "what": ("plain PGD L∞ (untargeted, no random start, step 2.5·ε/steps) through the adversarial stage "
                 "against one surrogate CNN; held_out is a second CNN trained with another seed that the attack "
                 "never sees; sign_noise = every pixel ±ε at random, clipped to [0,255]; ms per image = "
                 "attack + quantisation + evaluation of both models, fastest of repeats"),
        "images": args.images, "image_size": [32, 32], "classes": 3, "steps": args.steps,
        "training": {"images": 900, "epochs": 10, "seconds_for_both_nets": round(train_s, 2)},
        "machine": {"python": platform.python_version(), "cpu": platform.machine(),
                    "processor": platform.processor(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "numpy": np.__version__, "torch_threads": args.threads,
                    "load_average": {"before": load_before, "after": os.getloadavg()}},
        "epsilons": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print_table(rows)
    return 0


def measure_budget(specs: dict, nets: dict, images: np.ndarray, classes: np.ndarray, eps: float, steps: int,
                   repeats: int) -> dict:
    """One ε: the stage's attack on every image, its transfer, and the model-blind baseline."""
    stage = AdversarialStage(AdversarialParams(stage="adversarial", surrogates=[specs["surrogate"]],
                                               held_out=[specs["held_out"]], epsilons=[eps], steps=steps))
    variant = stage.variants()[0]
    best = float("inf")
    for _ in range(repeats):
        batch = Batch(keys=[f"s{i}" for i in range(len(images))], images=[im.copy() for im in images],
                      seeds=list(range(len(images))), labels=[int(c) for c in classes])
        began = time.perf_counter()
        out = stage.apply(batch, variant)
        best = min(best, time.perf_counter() - began)
    if out.status != ["ok"] * len(images):
        raise SystemExit(f"ε {eps:g}: not every sample was attacked: {sorted(set(out.reason) - {None})}")
    rows = [{"config": variant.config, "status": s, "shift": {**variant.params, **shift}}
            for s, shift in zip(out.status, out.shift)]
    rates = transfer_summary(rows)["configs"][variant.config]
    # the baseline spends the same L∞ budget without looking at any model
    rng = np.random.default_rng(int(eps * 1000))
    noisy = np.clip(images.astype(int) + rng.choice([-eps, eps], images.shape), 0, 255).round().astype(np.uint8)
    noise_success = {name: float(np.mean(predict(net, noisy) != classes)) for name, net in nets.items()}
    linf = [int(np.abs(a.astype(int) - c.astype(int)).max()) for a, c in zip(out.images, images)]
    return {
        "config": variant.config,
        "max_linf_levels": max(linf),
        "ms_per_image": round(1000 * best / len(images), 2),
        "surrogate": {**rates["surrogates"]["surrogate"], "sign_noise_success": noise_success["surrogate"]},
        "held_out": {**rates["held_out"]["held_out"], "sign_noise_success": noise_success["held_out"]},
    }


def print_table(rows: dict) -> None:
    pct = lambda value: f"{100 * value:.1f}%"  # noqa: E731
    first = next(iter(rows.values()))
    print(f"| ε (/255) | surrogate acc. (clean {pct(first['surrogate']['clean_accuracy'])}) | held-out acc. "
          f"(clean {pct(first['held_out']['clean_accuracy'])}) | held-out success | same-norm sign noise |")
    print("|---|---|---|---|---|")
    for eps, row in rows.items():
        held = row["held_out"]
        print(f"| {eps} | {pct(row['surrogate']['adversarial_accuracy'])} | {pct(held['adversarial_accuracy'])} "
              f"| {pct(held['success_rate'])} | {pct(held['sign_noise_success'])} |")
    print("ms per image:", {eps: row["ms_per_image"] for eps, row in rows.items()})


if __name__ == "__main__":
    sys.exit(main())
