"""Tiny real releases for the card, Croissant, publish and regenerate tests (built by the real engine)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

TINY_MANIFEST: dict[str, Any] = {
    "name": "tiny-shift",
    "version": "1.0.0",
    "license": "cc-by-4.0",
    "description": "Two corruptions of tiny photographs.",
    "seed": 7,
    "source": {"kind": "samples", "images": ["astronaut", "chelsea", "coffee"], "size": 32},
    "shifts": [{"stage": "corruptions", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]}],
    "output": {"formats": ["webdataset"], "samples_per_shard": 2},
    "hub": {"repo": "org/tiny-shift", "pretty_name": "Tiny shift", "tags": ["robustness"],
            "source_datasets": ["scikit-image"], "citation": "@misc{tiny, title={Tiny shift}}"},
}


def write_manifest(path: Path, **changes: Any) -> Path:
    """TINY_MANIFEST with top-level keys replaced, written as YAML."""
    manifest = copy.deepcopy(TINY_MANIFEST)
    manifest.update(copy.deepcopy(changes))
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def build_tiny_release(folder: Path, **changes: Any) -> Path:
    """Build through the real engine on an in-process Dask cluster (no worker processes to spawn)."""
    from dask.distributed import LocalCluster

    from pipeline.core.build import build_release

    folder.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(folder / "tiny.yaml", **changes)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        build_release(manifest, folder / "release", scheduler=cluster.scheduler_address)
    return folder / "release"
