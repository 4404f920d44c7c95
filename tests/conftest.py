"""Shared fixtures: small manifests written to tmp folders."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY_RELEASE = {
    "name": "tiny",
    "version": "0.0.1",
    "seed": 7,
    "source": {"kind": "samples", "images": ["astronaut", "chelsea", "coffee"], "count": 5, "size": 48},
    "shifts": [{"stage": "corruptions", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5]}],
    "output": {"formats": ["webdataset", "zarr"], "samples_per_shard": 2, "image_size": [48, 48]},
}


@pytest.fixture
def tiny_release() -> dict:
    """A dict manifest: 5 samples × 4 configs, 3 shards per config."""
    return copy.deepcopy(TINY_RELEASE)


@pytest.fixture
def write_manifest(tmp_path):
    def write(data: dict, name: str = "manifest.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared CPU run many times faster without thread contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
