"""Benchmark: publishing through the Xet and LFS upload paths against the loopback Hub.

Writes a release of --shards tar shards of --mb MB each (random bytes, so nothing deduplicates),
publishes it to a fresh loopback Hub (tests/pipeline/hub_server.py, which rebuilds every Xet
file from its xorbs and checks every sha256) once per upload path, then republishes with one
shard changed, and reports wall seconds per run, MB/s, and the share of the first run spent in
publish's own sha256 passes (when collecting the release, and again just before each upload).
Loopback numbers measure the client and the server's checks on 2 shared cores, not a network.

    .venv/bin/python scripts/bench_publish.py [--shards 8] [--mb 16]

Writes scripts/results/publish.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "pipeline")]
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
from hub_server import HubServer  # noqa: E402
from test_publish import REPO, api_for, write_release  # noqa: E402

from pipeline.hub.publish import RetryPolicy, publish_release  # noqa: E402


def random_release(root: Path, shards: int, megabytes: int, changed: int | None = None) -> Path:
    write_release(root, {f"noise/test-{i:05d}": str(i) for i in range(shards)}, revision=1 if changed is None else 2)
    # replace the tiny tars' payload with random bytes: rewrite provenance through write_release's format
    import hashlib

    provenance = json.loads((root / "provenance.json").read_text())
    for i, shard in enumerate(provenance["shards"]):
        path = root / shard["path"]
        rng_seed = i + (1000 if i == changed else 0)
        data = path.read_bytes() + _noise(megabytes * 1_000_000, rng_seed)
        path.write_bytes(data)
        shard["sha256"], shard["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (root / "provenance.json").write_text(json.dumps(provenance, indent=2))
    return root


def _noise(size: int, seed: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def timed_publish(hub: HubServer, root: Path, transfer: str) -> tuple[float, float]:
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.0, lambda s: None), transfer=transfer)
    profile.disable()
    seconds = time.perf_counter() - started
    stats = pstats.Stats(profile)
    hashing = sum(row[3] for key, row in stats.stats.items() if key[2] == "file_sha256")
    return seconds, hashing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--mb", type=int, default=16)
    args = parser.parse_args()
    total_mb = args.shards * args.mb
    results = {"shards": args.shards, "mb_per_shard": args.mb, "machine": platform.machine(),
               "python": platform.python_version(), "paths": {}}
    for transfer in ("xet", "lfs"):
        with tempfile.TemporaryDirectory() as folder, HubServer() as hub:
            root = random_release(Path(folder), args.shards, args.mb)
            first, hashing = timed_publish(hub, root, transfer)
            random_release(root, args.shards, args.mb, changed=0)
            again, _ = timed_publish(hub, root, transfer)
            results["paths"][transfer] = {
                "first_publish_s": round(first, 2), "first_publish_mb_per_s": round(total_mb / first, 1),
                "hashing_share_of_first": round(hashing / first, 3),
                "one_changed_shard_s": round(again, 2)}
        print(transfer, results["paths"][transfer], flush=True)
    out = ROOT / "scripts" / "results" / "publish.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
