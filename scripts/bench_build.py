"""End-to-end `build` throughput, side by side in one run:

(a) build with 1 Dask worker, (b) with 2 workers, (c) a plain single-process
loop doing the same decode → corrupt → encode → write with the same library
functions, (d) rebuilding the unchanged release of (a), and as a control (e) the
plain loop split over two processes: what two cores of this machine give at all.

    .venv/bin/python scripts/bench_build.py                 # 5,000 images, 224 px
    .venv/bin/python scripts/bench_build.py --count 300     # quick look

Writes scripts/results/build.json. Targets: 2 workers ≥ 1.7× the throughput
of 1 worker; 1 worker ≥ 0.9× the plain loop; rebuild < 5 % of the full build.
The machine is shared, so the load average before and after each part is
recorded; a run whose load rose well above the worker count is disturbed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.core.build import build_release  # noqa: E402
from pipeline.core.manifest import parse_release  # noqa: E402
from pipeline.core.seeding import derive_seed  # noqa: E402
from pipeline.sources import open_source  # noqa: E402
from pipeline.writers.files import filesystem  # noqa: E402
from pipeline.writers.webdataset import encode_image, write_tar  # noqa: E402
from stages.corruptions import corrupt  # noqa: E402

RESULTS = ROOT / "scripts" / "results"


def release_dict(count: int, size: int, corruption: str, severity: int, per_shard: int) -> dict:
    return {
        "name": "bench-build", "version": "0.0.1", "license": "cc-by-4.0", "seed": 1,
        "source": {"kind": "samples", "count": count, "size": size},
        "shifts": [{"stage": "corruptions", "corruptions": [corruption], "severities": [severity]}],
        "output": {"formats": ["webdataset"], "samples_per_shard": per_shard, "encoding": "png"},
    }


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def plain_loop(release, out: Path, part: int = 0, parts: int = 1) -> int:
    """The same work with no engine: decode → corrupt → encode → one tar per shard
    (shards part, part + parts, ... when the work is split over processes)."""
    source = open_source(release.source)
    spec = release.shifts[0]
    name, severity = spec.corruptions[0], spec.severities[0]
    config = f"{name}-{severity}"
    fs, root = filesystem(str(out))
    items = list(source.index())
    per_shard = release.output.samples_per_shard
    for shard, start in list(enumerate(range(0, len(items), per_shard)))[part::parts]:
        members = []
        for item in items[start:start + per_shard]:
            seed = derive_seed(release.seed, "corruptions", config, item.key)
            image = corrupt(source.load(item).image, name, severity, seed=seed)
            ext, data = encode_image(image, release.output.encoding, release.output.jpeg_quality)
            doc = {"key": item.key, "source": {"key": item.key, "sha256": item.sha256}, "seed": seed}
            members.append((item.key, {ext: data, "json": json.dumps(doc, sort_keys=True).encode()}))
        write_tar(fs, f"{root}/data/{config}/test-{shard:05d}.tar", members)
    return len(items)


def plain_loop_part(manifest: dict, out: Path, part: int, parts: int) -> int:
    return plain_loop(parse_release(manifest), out, part, parts)


def plain_loop_two_processes(manifest: dict, out: Path) -> int:
    """The machine's own ceiling for two workers: the plain loop split over two processes."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        done = [pool.submit(plain_loop_part, manifest, out, part, 2) for part in range(2)]
        return sum(d.result() for d in done)


def image_members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")}


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """CPU time of this process (the driver, or the whole plain loop), or of its
    finished children (the Dask worker processes, once the cluster has closed)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(label: str, fn) -> dict:
    before, cpu, workers_cpu = load(), cpu_seconds(), cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.2f} s (load {before} -> {load()})", flush=True)
    # CPU seconds do not depend on what else runs on the machine, unlike wall time
    return {"seconds": round(seconds, 3), "this_process_cpu_s": round(cpu_seconds() - cpu, 3),
            "worker_processes_cpu_s": round(cpu_seconds(resource.RUSAGE_CHILDREN) - workers_cpu, 3),
            "load_before": before, "load_after": load(), "value": value}


def one_round(manifest: dict, work: Path, config: str) -> dict[str, dict]:
    """Plain loop (1 and 2 processes), 1 worker, 2 workers, then the unchanged rebuild of
    the 1-worker release."""
    release = parse_release(manifest)
    parts = {
        "plain_loop": timed("plain loop", lambda: plain_loop(release, work / "plain")),
        "plain_loop_2_processes": timed("plain loop, 2 processes",
                                        lambda: plain_loop_two_processes(manifest, work / "plain2")),
        "build_1_worker": timed("build, 1 worker", lambda: build_release(release, work / "w1", workers=1)),
        "build_2_workers": timed("build, 2 workers", lambda: build_release(release, work / "w2", workers=2)),
        "rebuild_unchanged": timed("rebuild unchanged (1 worker)",
                                   lambda: build_release(release, work / "w1", workers=1)),
    }
    first_shard = f"data/{config}/test-00000.tar"
    parts["same_png_bytes"] = image_members(work / "plain" / first_shard) == image_members(work / "w1" / first_shard)
    parts["release_bytes"] = sum(p.stat().st_size for p in (work / "w1" / "data").glob("*/*.tar"))
    return parts


def summarise(part: dict, n: int) -> dict:
    value = part.pop("value")
    if value is not None and not isinstance(value, int):
        part.update(built=value.built, skipped=value.skipped, counts=value.counts,
                    reported_seconds=round(value.seconds, 3))
    part["images_per_s"] = round(n / part["seconds"], 2)
    part["cpu_ms_per_image"] = round(1000 * (part["this_process_cpu_s"] + part["worker_processes_cpu_s"]) / n, 2)
    return part


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="source images (default 5000)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--corruption", default="gaussian_noise")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--per-shard", type=int, default=100, help="samples_per_shard (default 100)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of all four parts; each part reports its fastest round (default 1)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS / "build.json")
    args = parser.parse_args()

    manifest = release_dict(args.count, args.size, args.corruption, args.severity, args.per_shard)
    config, n = f"{args.corruption}-{args.severity}", args.count
    load_start = load()
    rounds = []
    for _ in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="bench-build-", dir=args.work))
        try:
            rounds.append(one_round(manifest, work, config))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    names = ["plain_loop", "plain_loop_2_processes", "build_1_worker", "build_2_workers", "rebuild_unchanged"]
    results = {}
    for name in names:
        tries = [summarise(r[name], n) for r in rounds]
        results[name] = {**min(tries, key=lambda t: t["seconds"]), "all_seconds": [t["seconds"] for t in tries]}
    plain, plain2, one, two, again = (results[name]["seconds"] for name in names)
    ratios = {"two_vs_one_worker": round(one / two, 3), "one_worker_vs_plain_loop": round(plain / one, 3),
              "rebuild_vs_full_build": round(again / one, 4),
              # what two processes get on this machine at all, with no engine: the ceiling for 2 workers
              "plain_loop_two_vs_one_process": round(plain / plain2, 3)}
    report = {
        "what": f"build of {n} samples-source images ({args.size}x{args.size}) × corruption {config}, png, "
                f"{args.per_shard} samples per shard, webdataset output; fastest of {args.repeats} round(s)",
        "targets": {"two_vs_one_worker": ">= 1.7", "one_worker_vs_plain_loop": ">= 0.9",
                    "rebuild_vs_full_build": "< 0.05"},
        "ratios": ratios,
        "meets": {"two_vs_one_worker": ratios["two_vs_one_worker"] >= 1.7,
                  "one_worker_vs_plain_loop": ratios["one_worker_vs_plain_loop"] >= 0.9,
                  "rebuild_vs_full_build": ratios["rebuild_vs_full_build"] < 0.05},
        "parts": results,
        "plain_loop_same_png_bytes_as_build": all(r["same_png_bytes"] for r in rounds),
        "release_bytes": rounds[0]["release_bytes"],
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.machine(), "opencv_threads": cv2.getNumThreads(),
                    "load_average_before": load_start, "load_average_after": load()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(ratios), f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
