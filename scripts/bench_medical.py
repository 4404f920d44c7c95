"""Per-image speed of the medical stage against the reference `medmnistc` 0.1.0, side by side.

For every dataset catalogue, corruption and severity both implementations
corrupt the same 224×224 images on one core (cv2, torch and ImageMagick
limited to one thread); the reference gets what its dataset builder passes
it (a PIL RGB image, converted to L afterwards for grey datasets), ours the
uint8 array. Writes scripts/results/medical.json and medical_grid.png.

The reference lives outside the project (it needs ImageMagick and torchvision):
    python3 -m venv .bench/venv
    echo "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')" \
        > .bench/venv/lib/python3.11/site-packages/project.pth
    .bench/venv/bin/pip install --no-deps medmnistc==0.1.0 torchvision wand
    apt-get install -y libmagickwand-dev
    .bench/venv/bin/python scripts/bench_medical.py [--repeats 3] [--datasets dermamnist ...]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MAGICK_THREAD_LIMIT"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.medical import CATALOGUES, corrupt  # noqa: E402
from stages.medical.catalogue import RGB_DATASETS, SEVERITIES  # noqa: E402

RESULTS = ROOT / "scripts" / "results"
# outputs that depend on no random draw, so they can be compared pixel for pixel
DETERMINISTIC = {"pixelate", "jpeg_compression", "defocus_blur", "zoom_blur", "gaussian_blur",
                 "brightness_up", "brightness_down", "contrast_up", "contrast_down", "saturate",
                 "gamma_corr_up", "gamma_corr_down", "black_corner"}


def load_reference():
    """medmnistc's registry, made importable on NumPy 2 and a CPU-only torch."""
    # torchvision's meta-kernel registration needs its compiled ops; medmnistc only uses
    # torchvision.transforms.functional, which is pure Python on top of torch.
    stub = "torchvision._meta_registrations"
    sys.modules.setdefault(stub, types.ModuleType(stub))
    if not hasattr(np, "fromstring") or np.__version__ >= "2":
        np.fromstring = lambda data, dtype=float, **_: np.frombuffer(data, dtype=dtype).copy()
    import torch
    torch.set_num_threads(1)
    from medmnistc.corruptions.registry import CORRUPTIONS_DS
    for table in CORRUPTIONS_DS.values():
        if "impulse_noise" in table:
            table["impulse_noise"].rng = np.random.default_rng(0)
    return CORRUPTIONS_DS


def test_images(count: int) -> dict[int, list[np.ndarray]]:
    """`count` 224×224 tiles per channel count, from scikit-image's medical images."""
    rgb_sources = [skimage.data.immunohistochemistry(), skimage.data.retina()]
    grey_sources = [skimage.data.cell(), skimage.data.camera()]

    def tiles(sources):
        out = []
        for k in range(count):
            src = sources[k % len(sources)]
            side = min(src.shape[:2]) // (1 + k // len(sources))
            out.append(cv2.resize(src[:side, :side], (224, 224), interpolation=cv2.INTER_AREA))
        return out

    return {3: tiles(rgb_sources), 1: [t[..., None] for t in tiles(grey_sources)]}


def reference_apply(corruptor, image: np.ndarray, severity: int, rgb: bool) -> np.ndarray:
    """What medmnistc's DatasetManager does per image."""
    out = corruptor.apply(Image.fromarray(image.squeeze()).convert("RGB"), severity - 1)
    return np.asarray(out if rgb else Image.fromarray(out).convert("L"))


def best_per_image(fns, images: list[np.ndarray], repeats: int) -> list[tuple[float, list[np.ndarray]]]:
    """For each function: the fastest of `repeats` passes (after one warm-up call), in ms per
    image, and the last pass's outputs. Passes alternate between the functions, so on a shared
    machine both sides of a comparison see the same load."""
    for fn in fns:
        fn(images[0])
    best, outputs = [float("inf")] * len(fns), [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            started = time.perf_counter()
            outputs[i] = [fn(x) for x in images]
            best[i] = min(best[i], (time.perf_counter() - started) / len(images) * 1000)
    return list(zip(best, outputs))


def mean_abs(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return round(float(np.mean([np.abs(x.astype(np.float32) - y).mean() for x, y in zip(a, b)])), 3)


def bench_severity(dataset, name, corruptor, severity, images, repeats) -> dict:
    rgb = dataset in RGB_DATASETS
    # a new seed per call, as the reference's global generator moves on between calls: with one
    # fixed seed every call would draw the same (e.g. the largest) number of marks or words
    seeds = itertools.count()
    (ref_ms, ref_out), (ours_ms, ours_out) = best_per_image(
        [lambda x: reference_apply(corruptor, x, severity, rgb),
         lambda x: corrupt(x, dataset, name, severity, seed=next(seeds))], images, repeats)
    ours_out = [o.reshape(r.shape) for o, r in zip(ours_out, ref_out)]
    clean = [x.reshape(r.shape) for x, r in zip(images, ref_out)]
    return {"ours_ms": round(ours_ms, 3), "reference_ms": round(ref_ms, 3),
            "distance_ours": mean_abs(ours_out, clean), "distance_reference": mean_abs(ref_out, clean),
            "mean_abs_diff": mean_abs(ours_out, ref_out) if name in DETERMINISTIC else None}


def bench_corruption(dataset, name, corruptor, images, repeats) -> dict:
    """Per severity: ms per image (ours, reference), mean |Δ| from clean for both and, for
    deterministic corruptions, mean |ours − reference|."""
    levels = {str(s): bench_severity(dataset, name, corruptor, s, images, repeats) for s in SEVERITIES}
    row = {field: {s: v[field] for s, v in levels.items()} for field in next(iter(levels.values()))}
    row["ours_total_ms"] = round(sum(row["ours_ms"].values()), 2)
    row["reference_total_ms"] = round(sum(row["reference_ms"].values()), 2)
    row["speedup"] = round(row["reference_total_ms"] / row["ours_total_ms"], 1)
    row["slowest_severity_speedup"] = round(min(v["reference_ms"] / v["ours_ms"] for v in levels.values()), 1)
    return row


def grid(dataset: str, reference, image: np.ndarray, path: Path, cell: int = 112) -> None:
    """Rows: the catalogue's corruptions; columns: clean, ours at 1..5, reference at 5."""
    rows = []
    for name in CATALOGUES[dataset]:
        cells = [image] + [corrupt(image, dataset, name, s, seed=0) for s in SEVERITIES]
        cells.append(reference_apply(reference[dataset][name], image, 5, True))
        strip = np.concatenate([cv2.resize(c.reshape(224, 224, -1), (cell, cell)).reshape(cell, cell, -1)
                                for c in cells], axis=1)
        label = np.full((18, strip.shape[1], 3), 255, np.uint8)
        cv2.putText(label, f"{name}   (clean | ours 1..5 | medmnistc 5)", (4, 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [label, strip]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(CATALOGUES))
    parser.add_argument("--images", type=int, default=3, help="224×224 images per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="passes per measurement; the fastest counts")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):  # one core, as the figures claim
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    load_before = os.getloadavg()
    reference = load_reference()
    images = test_images(args.images)
    results = {}
    for dataset in args.datasets:
        channels = 3 if dataset in RGB_DATASETS else 1
        rows = {name: bench_corruption(dataset, name, reference[dataset][name], images[channels],
                                       args.repeats) for name in CATALOGUES[dataset]}
        ours = sum(r["ours_total_ms"] for r in rows.values())
        ref = sum(r["reference_total_ms"] for r in rows.values())
        results[dataset] = {"catalogue_ours_ms": round(ours, 1), "catalogue_reference_ms": round(ref, 1),
                            "catalogue_speedup": round(ref / ours, 1), "corruptions": rows}
        worst = min(rows, key=lambda n: rows[n]["slowest_severity_speedup"])
        print(f"{dataset:15s} catalogue x5 severities per image: ours {ours:8.1f} ms, "
              f"medmnistc {ref:8.1f} ms, {ref / ours:5.1f}x; "
              f"least gain {worst} {rows[worst]['slowest_severity_speedup']}x", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"what": "ms per 224x224 image, one core, fastest of repeats; catalogue = all corruptions "
                       "x 5 severities", "images": args.images, "repeats": args.repeats,
               "machine": {"python": platform.python_version(), "cpu": platform.machine(),
                           "cores": os.cpu_count(), "numpy": np.__version__, "opencv": cv2.__version__,
                           # 1/5/15-minute load averages: the machine is shared, so figures
                           # taken under load > 1 per core are suspect
                           "load_average": {"before": load_before, "after": os.getloadavg()}},
               "datasets": results}
    (RESULTS / "medical.json").write_text(json.dumps(payload, indent=1) + "\n")
    grid("dermamnist", reference, images[3][0], RESULTS / "medical_grid.png")


if __name__ == "__main__":
    main()
