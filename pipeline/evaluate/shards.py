"""What `evaluate` reads from a release: its shards (one evaluation task each), the
decoded images of one shard (through the webdataset library) and the table of
accepted samples (samples.parquet) that metrics join predictions to."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")


class ReleaseError(Exception):
    """The folder is not a release evaluate can read (bad input, exit 2)."""


@dataclass(frozen=True)
class EvalUnit:
    """One Dask task: one model on one shard of the release."""

    shard_id: str            # "<config>/test-00003", as in provenance
    config: str
    path: str                # relative tar path
    sha256: str
    count: int
    fingerprint: str         # model weights + shard sha256 + options + code version

    @property
    def part(self) -> str:
        """The shard's predictions, relative to the model's work folder."""
        return f"parts/{self.shard_id}.parquet"


def read_provenance(release: Path) -> dict[str, Any]:
    path = release / "provenance.json"
    if not path.is_file():
        raise ReleaseError(f"{release} is not a release folder: provenance.json is missing (build it first)")
    return json.loads(path.read_text())


def release_shards(provenance: dict[str, Any], configs: list[str] | None = None) -> list[dict[str, Any]]:
    """Provenance's shard records that have a tar, optionally only some configs."""
    shards = [s for s in provenance.get("shards", []) if s.get("path")]
    if configs is not None:
        unknown = sorted(set(configs) - {s["config"] for s in shards})
        if unknown:
            raise ReleaseError(f"configs {unknown} are not in the release (it has "
                               f"{sorted({s['config'] for s in shards})[:20]})")
        shards = [s for s in shards if s["config"] in configs]
    if not shards:
        raise ReleaseError("the release has no WebDataset shards to evaluate (output.formats lacks webdataset?)")
    return shards


def read_shard(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """(key, uint8 image) per sample of one tar, in tar order, through webdataset's tar
    iterator and key grouping (no pipeline around them: nothing to shuffle or split here)."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    with open(path, "rb") as handle:
        members = ({**member, "__url__": path} for member in tar_file_iterator(handle))
        for sample in group_by_keys(members):
            ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
            if ext is None:
                raise ReleaseError(f"{path}: sample {sample['__key__']} has no image member")
            yield sample["__key__"], decode(sample[ext])


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)


SAMPLE_COLUMNS = ["key", "source_key", "config", "stage", "shift", "label", "meta", "split"]


def sample_table(release: Path) -> list[dict[str, Any]]:
    """Accepted samples (status ok) with shift, label and meta parsed from JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = release / "samples.parquet"
    if not path.is_file():
        raise ReleaseError(f"{release} has no samples.parquet")
    table = pq.read_table(pa.BufferReader(path.read_bytes()), columns=[*SAMPLE_COLUMNS, "status"])
    rows = []
    for row in table.to_pylist():
        if row.pop("status") != "ok":
            continue
        for column in ("shift", "label", "meta"):
            row[column] = json.loads(row[column]) if row[column] else None
        rows.append(row)
    return rows
