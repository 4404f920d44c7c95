"""Benchmark: `shiftforge evaluate` throughput per worker against a plain PyTorch loop.

Builds a release of 384 corrupted 224 px crops of the scikit-image photographs in 6
shards of 64 (BENCH_MANIFEST; `--demo` uses manifests/demo.yaml: 342 images in 57 shards
of 6) unless --release names one, saves a small random transformers ResNet (safetensors + preprocessor config),
then measures on the same shards, with the same thread count and batch size:

- evaluate: one Dask worker process (LocalCluster), one task per shard, predictions
  written as Parquet, journaled; images/s = images / summed task seconds (the
  per-worker figure) and images / wall seconds of the run (cluster start excluded);
- plain loop: one process reads every tar with `tarfile` + PIL, stacks batches,
  resizes and normalises, runs the model and keeps the top-5, nothing written.

Best of --repeats each, alternating. Besides wall-clock rates, both sides report images
per CPU second of the thread doing the work (model load excluded), which a machine
shared with other jobs does not distort.

    .venv/bin/python scripts/bench_evaluate.py [--release DIR | --demo] [--batch-size 64] [--threads 1] [--repeats 2]

Writes scripts/results/evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_MANIFEST = {
    "name": "bench-evaluate", "version": "0.0.1", "seed": 1,
    "source": {"kind": "samples", "images": ["astronaut", "chelsea", "coffee", "rocket", "motorcycle",
                                             "hubble_deep_field"], "count": 192, "size": 224},
    "shifts": [{"stage": "corruptions", "corruptions": ["gaussian_noise", "contrast"], "severities": [3]}],
    "output": {"formats": ["webdataset"], "samples_per_shard": 64},
}


def save_model(out: Path) -> Path:
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                          layer_type="basic", num_labels=10)
    ResNetForImageClassification(config).eval().save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 224, "width": 224}, "image_mean": [0.485, 0.456, 0.406],
         "image_std": [0.229, 0.224, 0.225], "do_normalize": True}))
    return out


def plain_loop(release: Path, model_dir: Path, batch_size: int) -> tuple[int, float, float]:
    """The reference: decode, batch, normalise, forward, top-5; nothing else."""
    import torch
    from PIL import Image
    from transformers import ResNetForImageClassification

    model = ResNetForImageClassification.from_pretrained(model_dir).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    started, cpu, count = time.perf_counter(), time.thread_time(), 0
    for tar_path in sorted((release / "data").glob("*/*.tar")):
        with tarfile.open(tar_path) as tar:
            images = [np.asarray(Image.open(tar.extractfile(m)).convert("RGB"))
                      for m in tar.getmembers() if m.name.endswith(".png")]
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.stack(images[start:start + batch_size])).permute(0, 3, 1, 2).float() / 255
            with torch.inference_mode():
                model(pixel_values=(x - mean) / std).logits.softmax(1).topk(5, dim=1)
            count += len(x)
    return count, time.perf_counter() - started, time.thread_time() - cpu


def evaluate_once(release: Path, model_dir: Path, out: Path, batch_size: int) -> dict:
    from pipeline.evaluate import EvalOptions, evaluate_release, parse_model

    shutil.rmtree(out, ignore_errors=True)
    [path] = evaluate_release(release, [parse_model(str(model_dir))], out, workers=1,
                              options=EvalOptions(batch_size=batch_size, device="cpu"))
    return json.loads(path.read_text())["run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, default=None)
    parser.add_argument("--demo", action="store_true", help="build manifests/demo.yaml (6 images per shard)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # Dask workers inherit it; the loop sets it below
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    release = args.release or work / "release"
    if args.release is None:
        manifest = ROOT / "manifests" / "demo.yaml"
        if not args.demo:
            manifest = work / "bench.json"  # JSON is YAML
            manifest.write_text(json.dumps(BENCH_MANIFEST))
        subprocess.run([sys.executable, "-m", "pipeline", "build", str(manifest), "--out", str(release),
                        "--no-progress"], check=True, cwd=ROOT)
    model_dir = save_model(work / "resnet")
    plain, plain_cpu, ours = [], [], []
    for _ in range(args.repeats):  # alternate so drifting load on a shared machine hits both alike
        count, seconds, cpu = plain_loop(release, model_dir, args.batch_size)
        plain.append(count / seconds)
        plain_cpu.append(count / cpu)
        ours.append(evaluate_once(release, model_dir, work / "out", args.batch_size))
    best = max(ours, key=lambda r: r["images_per_second_per_worker"])
    per_worker = best["images_per_second_per_worker"]
    wall = best["images_run"] / best["wall_seconds"]
    per_cpu = max(r["images_per_cpu_second"] for r in ours)
    result = {
        "release": str(args.release) if args.release else ("demo" if args.demo else "BENCH_MANIFEST"),
        "images": best["images_run"], "shards": best["shards_run"], "batch_size": args.batch_size,
        "threads_per_worker": args.threads, "model": "random ResNet (32-64-128-256, 1 block each), 224 px",
        "plain_loop_images_per_s": round(max(plain), 2),
        "evaluate_images_per_s_per_worker": per_worker,
        "evaluate_images_per_s_wall": round(wall, 2),
        "ratio_per_worker_vs_plain": round(per_worker / max(plain), 3),
        "ratio_wall_vs_plain": round(wall / max(plain), 3),
        "plain_loop_images_per_cpu_s": round(max(plain_cpu), 2),
        "evaluate_images_per_cpu_s": per_cpu,
        "ratio_cpu_vs_plain": round(per_cpu / max(plain_cpu), 3),
        "load_average": os.getloadavg()[0],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__},
    }
    out = ROOT / "scripts" / "results" / ("evaluate-demo.json" if args.demo else "evaluate.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
