"""Benchmark: transfer of the adversarial stage's PGD from a surrogate to a held-out CNN.

Trains two tiny CNNs (the test suite's, from tests/tiny_classifiers.py) on
synthetic 32 px shapes with different seeds, saves the surrogate as
TorchScript and the held-out net as a `torch.export` program, then runs the
stage (plain PGD, L∞, untargeted) over a fresh set of shapes at each ε and
reports, per ε: surrogate and held-out accuracy clean vs adversarial, held-out
success, the same-norm baseline (every pixel ±ε at random, clipped to the pixel
range) and ms per image of the attack (best of --repeats, models loaded).
Then, at ε 8/255 and the same images: held-out success of each transfer
booster (MI, DI in its paper and torchattacks variants, TI 15 px and auto);
under L2 (ε 0.5 and 1.0 on [0,1] pixels, random start) the fraction of ε the
stored uint8 perturbation keeps; and a targeted attack's raw and off-target
success rates.

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
        variants = measure_variants(specs, images, classes, args.steps)
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
        "variants": variants,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print_table(rows)
    print(json.dumps(variants, indent=1))
    return 0


BOOSTERS = {
    "plain": {}, "mi": {"momentum": 1.0},
    "mi_di_enlarge": {"momentum": 1.0, "input_diversity": 0.5, "diversity_mode": "enlarge"},
    "mi_di_shrink": {"momentum": 1.0, "input_diversity": 0.5, "diversity_mode": "shrink"},
    "mi_ti15": {"momentum": 1.0, "ti_kernel": 15}, "mi_ti_auto": {"momentum": 1.0, "ti_kernel": "auto"},
}


def run_stage(specs: dict, images: np.ndarray, classes: np.ndarray, **params) -> tuple[dict, list]:
    stage = AdversarialStage(AdversarialParams(stage="adversarial", surrogates=[specs["surrogate"]],
                                               held_out=[specs["held_out"]], **params))
    variant = stage.variants()[0]
    batch = Batch(keys=[f"s{i}" for i in range(len(images))], images=[im.copy() for im in images],
                  seeds=list(range(len(images))), labels=[int(c) for c in classes])
    out = stage.apply(batch, variant)
    rows = [{"config": variant.config, "status": s, "shift": {**variant.params, **shift}}
            for s, shift in zip(out.status, out.shift)]
    return transfer_summary(rows)["configs"][variant.config], out.shift


def measure_variants(specs: dict, images: np.ndarray, classes: np.ndarray, steps: int) -> dict:
    """Boosters at ε 8, L2 budgets kept after rounding, and targeted success, raw and off-target."""
    boosters = {}
    for name, extra in BOOSTERS.items():
        rates, _ = run_stage(specs, images, classes, epsilons=[8], steps=steps, **extra)
        boosters[name] = {"surrogate_success": rates["surrogates"]["surrogate"]["success_rate"],
                          "held_out_success": rates["held_out"]["held_out"]["success_rate"]}
    l2 = {}
    for eps in (0.5, 1.0):
        rates, shifts = run_stage(specs, images, classes, norm="l2", epsilons=[eps], epsilon_unit="unit",
                                  random_start=True, steps=steps)
        kept = [s["achieved_l2"] / eps for s in shifts]
        l2[f"{eps:g}"] = {"mean_fraction_of_eps_kept": round(float(np.mean(kept)), 4),
                          "min_fraction_of_eps_kept": round(float(np.min(kept)), 4),
                          "max_fraction_of_eps_kept": round(float(np.max(kept)), 4),
                          "surrogate_success": rates["surrogates"]["surrogate"]["success_rate"],
                          "held_out_success": rates["held_out"]["held_out"]["success_rate"]}
    rates, _ = run_stage(specs, images, classes, epsilons=[8], steps=steps, target="square")
    targeted = {role: {k: rates[key][role][k] for k in ("success_rate", "success_rate_off_target",
                                                        "samples_off_target")}
                for role, key in (("surrogate", "surrogates"), ("held_out", "held_out"))}
    return {"linf_eps8_boosters": boosters, "l2_budget_kept": l2, "targeted_eps8_square": targeted}


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
