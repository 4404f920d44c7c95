"""Conformance of our corruptions with the reference packages, side by side on real photographs.

For every ImageNet-C corruption (`imagecorruptions` 1.1.2) and every
MedMNIST-C catalogue entry (`medmnistc` 0.1.0), at severities 1..5, both
implementations corrupt the same images under many seeds; the script records
the distribution of PSNR and SSIM against the clean image for each side
(mean, std, 5/50/95th percentiles), the difference of the means, and for
corruptions that draw nothing the mean |ours − reference| per pixel.
Stochastic corruptions cannot match pixel for pixel (different generators);
their PSNR/SSIM distributions should.

The reference gets what its own pipeline gives it: imagecorruptions a uint8
RGB array with NumPy's global generator seeded; medmnistc what its dataset
builder passes (a PIL RGB image, the output converted to L for the grey
datasets), with `random` and NumPy seeded and `impulse_noise` given its own
generator. Grey catalogues get grey photographs.

The references are not project dependencies; install them apart, e.g.

    pip install --no-deps imagecorruptions==1.1.2 medmnistc==0.1.0
    pip install --no-deps --target /tmp/refpkgs torchvision   # the one matching torch
    python scripts/conformance.py --reference-path /tmp/refpkgs [--seeds 5] [--quick]

medmnistc's motion blur needs ImageMagick (Wand); without it that corruption
is skipped and listed under "skipped". Writes scripts/results/conformance.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from stages.corruptions import CORRUPTIONS  # noqa: E402
from stages.corruptions import corrupt as corrupt_imagenet  # noqa: E402
from stages.corruptions.catalogue import CATALOGUE  # noqa: E402
from stages.medical import CATALOGUES  # noqa: E402
from stages.medical import corrupt as corrupt_medical  # noqa: E402
from stages.medical.catalogue import RGB_DATASETS, SEVERITIES  # noqa: E402

RESULTS = ROOT / "scripts" / "results"
SIDE = 224
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
MEDICAL_RGB = ("immunohistochemistry", "retina")
GREY = ("camera", "moon", "cell")
# MedMNIST-C corruptions that draw nothing (the others are compared by distribution only)
MEDICAL_DETERMINISTIC = {"pixelate", "jpeg_compression", "defocus_blur", "zoom_blur", "gaussian_blur",
                         "brightness_up", "brightness_down", "contrast_up", "contrast_down", "saturate",
                         "gamma_corr_up", "gamma_corr_down", "black_corner"}


# --- images ------------------------------------------------------------------------------------------


def square(image: np.ndarray) -> np.ndarray:
    """Centre square crop, resized to SIDE×SIDE with area interpolation."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def photographs(names: tuple[str, ...]) -> list[np.ndarray]:
    return [square(getattr(skimage.data, name)()) for name in names]


# --- references --------------------------------------------------------------------------------------


def load_medmnistc():
    """medmnistc's registry; Wand is stubbed when ImageMagick is missing (motion blur then fails)."""
    try:
        import wand.image  # noqa: F401
        has_magick = True
    except (ImportError, OSError):
        has_magick = False
        for name in ("wand", "wand.image", "wand.api"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["wand.image"].Image = type("Image", (), {})
        sys.modules["wand.api"].library = None
    from bench_medical import load_reference

    return load_reference(), has_magick


# --- statistics --------------------------------------------------------------------------------------


def psnr(clean: np.ndarray, noisy: np.ndarray) -> float:
    mse = float(np.mean((clean.astype(np.float64) - noisy.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean, noisy = clean.reshape(noisy.shape), noisy
    multichannel = noisy.ndim == 3 and noisy.shape[2] == 3
    return float(structural_similarity(clean.squeeze(), noisy.squeeze(), data_range=255,
                                       channel_axis=-1 if multichannel else None))


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4),
            "p5": round(float(np.percentile(v, 5)), 4), "p50": round(float(np.median(v)), 4),
            "p95": round(float(np.percentile(v, 95)), 4)}


def compare(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], deterministic: bool) -> dict:
    """pairs of (clean, ours, reference) -> PSNR/SSIM distributions of both and their differences."""
    stats = {side: {"psnr": [], "ssim": []} for side in ("ours", "reference")}
    for clean, ours, ref in pairs:
        for side, out in (("ours", ours), ("reference", ref)):
            stats[side]["psnr"].append(psnr(clean, out))
            stats[side]["ssim"].append(ssim(clean, out))
    row = {side: {metric: summary(values) for metric, values in metrics.items()}
           for side, metrics in stats.items()}
    row["delta_psnr_db"] = round(row["ours"]["psnr"]["mean"] - row["reference"]["psnr"]["mean"], 3)
    row["delta_ssim"] = round(row["ours"]["ssim"]["mean"] - row["reference"]["ssim"]["mean"], 4)
    if deterministic:
        row["mean_abs_diff"] = round(float(np.mean([
            np.abs(o.astype(np.int16).reshape(r.shape) - r).mean() for _, o, r in pairs])), 4)
    row["samples"] = len(pairs)
    return row


# --- the two families --------------------------------------------------------------------------------


def imagenet_c(reference, images: list[np.ndarray], seeds: range, names: list[str]) -> dict:
    rows = {}
    for name in names:
        rows[name] = {}
        for severity in SEVERITIES:
            pairs = []
            for seed in seeds:
                for k, image in enumerate(images):
                    np.random.seed(1000 * seed + k)   # the reference draws from NumPy's global generator
                    ref = np.uint8(reference.corrupt(image, severity, corruption_name=name))
                    ours = corrupt_imagenet(image, name, severity, seed=1000 * seed + k)
                    pairs.append((image, ours, ref))
            rows[name][str(severity)] = compare(pairs, deterministic=not CATALOGUE[name].random)
        print(f"imagenet-c {name:18s} ΔPSNR by severity "
              f"{[rows[name][str(s)]['delta_psnr_db'] for s in SEVERITIES]}", flush=True)
    return rows


def medmnist_c(reference, has_magick: bool, images: dict[int, list[np.ndarray]], seeds: range,
               datasets: list[str]) -> tuple[dict, list[str]]:
    from bench_medical import reference_apply

    rows, skipped = {}, []
    for dataset in datasets:
        rgb = dataset in RGB_DATASETS
        rows[dataset] = {}
        for name in CATALOGUES[dataset]:
            if name == "motion_blur" and not has_magick:
                skipped.append(f"{dataset}/{name}: medmnistc needs ImageMagick")
                continue
            corruptor = reference[dataset][name]
            rows[dataset][name] = {}
            for severity in SEVERITIES:
                pairs = []
                for seed in seeds:
                    for k, image in enumerate(images[3 if rgb else 1]):
                        s = 1000 * seed + k
                        np.random.seed(s)
                        random.seed(s)
                        corruptor.rng = np.random.default_rng(s)
                        ref = reference_apply(corruptor, image, severity, rgb)
                        ours = corrupt_medical(image, dataset, name, severity, seed=s)
                        pairs.append((image, ours.reshape(ref.shape), ref))
                rows[dataset][name][str(severity)] = compare(pairs, name in MEDICAL_DETERMINISTIC)
            print(f"medmnist-c {dataset:14s} {name:16s} ΔPSNR by severity "
                  f"{[rows[dataset][name][str(s)]['delta_psnr_db'] for s in SEVERITIES]}", flush=True)
    return rows, skipped


def worst(rows: dict, depth: int) -> list[dict]:
    """Every (…, corruption) ranked by its largest |ΔPSNR| over severities, largest first."""
    flat = []

    def walk(node, path):
        if len(path) == depth:
            deltas = {s: v["delta_psnr_db"] for s, v in node.items()}
            severity = max(deltas, key=lambda s: abs(deltas[s]))
            flat.append({"corruption": "/".join(path), "severity": int(severity),
                         "delta_psnr_db": deltas[severity],
                         "delta_ssim": node[severity]["delta_ssim"]})
            return
        for key, child in node.items():
            walk(child, [*path, key])

    walk(rows, [])
    return sorted(flat, key=lambda r: -abs(r["delta_psnr_db"]))


def merged(old: dict, new: dict) -> dict:
    """`old` with the corruptions measured in `new` replaced, and the rankings recomputed."""
    for family in ("imagenet_c", "medmnist_c"):
        for key, rows in new.get(family, {}).items():
            target = old.setdefault(family, {})
            target[key] = {**target.get(key, {}), **rows} if family == "medmnist_c" else rows
    if "imagenet_c" in old:
        old["imagenet_c_worst"] = worst(old["imagenet_c"], 1)[:10]
    if "medmnist_c" in old:
        old["medmnist_c_worst"] = worst(old["medmnist_c"], 2)[:15]
    old["machine"] = new["machine"]
    return old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-path", help="extra folder on sys.path (e.g. torchvision installed apart)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per image (each image × seed is a sample)")
    parser.add_argument("--datasets", nargs="*", default=None, help="MedMNIST-C catalogues (default: all)")
    parser.add_argument("--corruptions", nargs="*", default=None, help="ImageNet-C corruptions (default: all)")
    parser.add_argument("--skip-imagenet-c", action="store_true")
    parser.add_argument("--skip-medmnist-c", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "conformance.json"))
    parser.add_argument("--update", action="store_true",
                        help="replace only the measured entries of an existing --out file")
    args = parser.parse_args()
    if args.reference_path:
        sys.path.insert(0, args.reference_path)
    cv2.setNumThreads(1)
    started, seeds = time.time(), range(args.seeds)
    colour = photographs(PHOTOS)
    payload = {"what": "PSNR (dB) / SSIM of corrupted vs clean, distributions over images × seeds, "
                       "ours vs the reference; delta = ours − reference (mean)",
               "images": {"imagenet_c": list(PHOTOS), "medmnist_c_rgb": list(MEDICAL_RGB + PHOTOS[:2]),
                          "medmnist_c_grey": list(GREY) + [f"{n} (luma)" for n in PHOTOS[:1]]},
               "side": SIDE, "seeds": args.seeds}
    if not args.skip_imagenet_c:
        from bench_corruptions import load_reference

        names = args.corruptions or CORRUPTIONS
        payload["imagenet_c"] = imagenet_c(load_reference(None), colour, seeds, names)
        payload["imagenet_c_worst"] = worst(payload["imagenet_c"], 1)[:10]
    if not args.skip_medmnist_c:
        reference, has_magick = load_medmnistc()
        rgb = photographs(MEDICAL_RGB) + colour[:2]
        grey = [square(getattr(skimage.data, n)()) for n in GREY] + [cv2.cvtColor(colour[0], cv2.COLOR_RGB2GRAY)]
        datasets = args.datasets or [d for d in CATALOGUES if d not in ("organcmnist", "organsmnist")]
        payload["medmnist_c"], payload["skipped"] = medmnist_c(
            reference, has_magick, {3: rgb, 1: grey}, seeds, datasets)
        payload["medmnist_c_worst"] = worst(payload["medmnist_c"], 2)[:15]
        payload["note"] = "organcmnist and organsmnist share organamnist's catalogue; measured once"
    payload["machine"] = {"python": platform.python_version(), "numpy": np.__version__,
                          "opencv": cv2.__version__, "seconds": round(time.time() - started, 1)}
    if args.update and Path(args.out).exists():
        payload = merged(json.loads(Path(args.out).read_text()), payload)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out} in {payload['machine']['seconds']} s")


if __name__ == "__main__":
    main()
