"""Planning cost: 1,000,000 source items × 10 variants, time and peak RSS.

Each measurement runs in a fresh subprocess that does nothing but import the
pipeline and plan, so `ru_maxrss` is the peak of planning alone (plus the
imports, reported apart as `import_rss_mb`). Nothing is decoded or written.

    .venv/bin/python scripts/bench_plan.py                 # 1M × 10, shards of 100 and 1000
    .venv/bin/python scripts/bench_plan.py --count 100000  # quick look

Writes scripts/results/plan.json. Targets: under 30 s and under 1 GB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
TARGET_SECONDS = 30.0
TARGET_RSS_MB = 1024.0
# ten variants: five corruptions × two severities
CORRUPTIONS = ["gaussian_noise", "shot_noise", "defocus_blur", "contrast", "jpeg_compression"]
SEVERITIES = [1, 5]


def release_dict(count: int, per_shard: int) -> dict:
    return {
        "name": "bench-plan", "version": "0.0.1", "license": "cc-by-4.0", "seed": 1,
        "source": {"kind": "samples", "count": count, "size": 224},
        "shifts": [{"stage": "corruptions", "corruptions": CORRUPTIONS, "severities": SEVERITIES}],
        "output": {"formats": ["webdataset"], "samples_per_shard": per_shard, "encoding": "png"},
    }


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(count: int, per_shard: int) -> None:
    """Plan once in this (fresh) process and print one JSON line."""
    sys.path.insert(0, str(ROOT))
    from pipeline.core.manifest import parse_release
    from pipeline.core.plan import SourceIndex, plan_release
    from pipeline.sources import open_source

    release = parse_release(release_dict(count, per_shard))
    import_rss = rss_mb()
    started = time.perf_counter()
    source = open_source(release.source)
    index = SourceIndex.from_items(source.index())
    indexed = time.perf_counter()
    plan = plan_release(release, index=index, source=source)
    finished = time.perf_counter()
    print(json.dumps({
        "count": count, "samples_per_shard": per_shard, "variants": len(plan.variants),
        "units": len(plan.units),
        "index_s": round(indexed - started, 3), "plan_s": round(finished - indexed, 3),
        "total_s": round(finished - started, 3), "peak_rss_mb": round(rss_mb(), 1),
        "import_rss_mb": round(import_rss, 1),
    }))


def measure(count: int, per_shard: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--count", str(count), "--per-shard", str(per_shard)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["meets_time"] = result["total_s"] < TARGET_SECONDS
    result["meets_rss"] = result["peak_rss_mb"] < TARGET_RSS_MB
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="source items (default 1,000,000)")
    parser.add_argument("--per-shard", type=int, nargs="+", default=[100, 1000],
                        help="samples_per_shard values")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "plan.json")
    args = parser.parse_args()
    if args.child:
        child(args.count, args.per_shard[0])
        return 0

    load_before = os.getloadavg()
    runs = []
    for per_shard in args.per_shard:
        runs.append(measure(args.count, per_shard))
        print(json.dumps(runs[-1]))
    report = {
        "what": f"plan_release (source indexing + planning) of {args.count} samples items × "
                f"{len(CORRUPTIONS) * len(SEVERITIES)} corruption variants, fresh subprocess per run",
        "targets": {"seconds": TARGET_SECONDS, "peak_rss_mb": TARGET_RSS_MB},
        "runs": runs,
        "ratios": {f"spp{r['samples_per_shard']}": {
            "time_vs_target": round(r["total_s"] / TARGET_SECONDS, 3),
            "rss_vs_target": round(r["peak_rss_mb"] / TARGET_RSS_MB, 3)} for r in runs},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.machine(),
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
