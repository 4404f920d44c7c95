"""Benchmark: how fast bad input is refused, and what the stricter `verify` costs.

1. load_manifest on each hostile manifest (alias bomb, self alias, 50,000-deep
   nesting, Latin-1, UTF-16, 50 MB, duplicate key): seconds until the one-line
   ManifestError (best of --repeats);
2. verify_release on a tiny release (20 samples, 12 shards, WebDataset + Zarr),
   with and without the Zarr checks, best of --repeats.

    .venv/bin/python scripts/bench_hardening.py [--repeats 5]

Writes scripts/results/hardening.json.
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

TINY = {"name": "tiny", "version": "0.0.1", "seed": 7,
        "source": {"kind": "samples", "images": ["astronaut", "chelsea", "coffee"], "count": 5, "size": 48},
        "shifts": [{"stage": "corruptions", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5]}],
        "output": {"formats": ["webdataset", "zarr"], "samples_per_shard": 2, "image_size": [48, 48]}}


def hostile_manifests() -> dict[str, bytes]:
    bomb = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return {"alias bomb (9^9)": ("\n".join(bomb) + "\nname: *l8\n").encode(),
            "self alias": b"name: &a [*a]\n",
            "50,000-deep nesting": b"name: " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
            "latin-1": b"name: caf\xe9\n", "utf-16": "name: x\n".encode("utf-16"),
            "50 MB": b"#" + b"x" * (50 << 20), "duplicate key": b"name: a\nname: b\n"}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_manifests(folder: Path, repeats: int) -> dict[str, float]:
    from pipeline.core.manifest import ManifestError, load_manifest

    results = {}
    for name, data in hostile_manifests().items():
        path = folder / "m.yaml"
        path.write_bytes(data)

        def refuse(path=path, name=name):
            try:
                load_manifest(path)
            except ManifestError:
                return
            raise AssertionError(f"{name} was accepted")

        results[name] = round(best(refuse, repeats), 4)
    return results


def bench_verify(folder: Path, repeats: int) -> dict[str, float]:
    import pipeline.release.verify_zarr
    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release
    from pipeline.release.verify import verify_release

    out = folder / "release"
    build_release(parse_release(TINY), out, workers=1)
    full = best(lambda: verify_release(out), repeats)
    original = pipeline.release.verify_zarr.check_zarr
    pipeline.release.verify_zarr.check_zarr = lambda *args: None
    try:
        without_zarr = best(lambda: verify_release(out), repeats)
    finally:
        pipeline.release.verify_zarr.check_zarr = original
    return {"verify_s": round(full, 4), "verify_without_zarr_checks_s": round(without_zarr, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"machine": platform.platform(), "python": platform.python_version(), "repeats": args.repeats,
                  "refuse_manifest_s": bench_manifests(Path(tmp), args.repeats),
                  "tiny_release": bench_verify(Path(tmp), args.repeats)}
    out = ROOT / "scripts" / "results" / "hardening.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
