"""`shiftforge export`: turn a built release into the layout another benchmark's code loads.

`medmnist-c` writes one `{dataset}/{corruption}.npz` per medical corruption,
as MedMNIST-C publishes it: `test_images` (N·S images, severity-major:
image i at severity index s is row i + s·N) and `test_labels` (N·S × L).
Rows come from `samples.parquet` (stage `medical`, status ok); pixels are
read from the release's WebDataset shards one at a time (each tar is indexed
once, members are read by offset) and streamed into the `.npy` members, so a
corruption of any size is exported in constant memory. Source images are
ordered by source key, which for the npz source (`{flag}-{split}-{index:06d}`)
is the original MedMNIST order.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq

from pipeline.writers.files import atomic_open, filesystem
from stages.base import UsageError

FORMATS = ("medmnist-c",)
_IMAGE_EXTENSIONS = (".png", ".jpg")


class ExportError(Exception):
    """The release cannot be laid out in the requested format (missing samples, mixed sizes)."""


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    dataset: str
    corruption: str
    images: int            # N·S
    severities: list[int]
    shape: tuple[int, ...]                 # of test_images
    label_shape: tuple[int, ...] | None    # of test_labels; None when the samples carry no integer labels


@dataclass(frozen=True)
class _Row:
    key: str
    shard: str
    label: Any


class ShardReader:
    """Random access to tar members by name; each tar's headers are scanned once."""

    def __init__(self, release: Path):
        self.release = release
        self._members: dict[str, dict[str, tuple[int, int]]] = {}

    def members(self, shard: str) -> dict[str, tuple[int, int]]:
        """name -> (data offset, size) of every file in `shard`."""
        if shard not in self._members:
            with tarfile.open(self.release / shard) as tar:
                self._members[shard] = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
        return self._members[shard]

    def read(self, shard: str, name: str) -> bytes:
        offset, size = self.members(shard)[name]
        with open(self.release / shard, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def image(self, row: _Row) -> np.ndarray:
        """uint8 HxW (grey) or HxWx3 RGB pixels of one sample."""
        names = self.members(row.shard)
        name = next((row.key + ext for ext in _IMAGE_EXTENSIONS if row.key + ext in names), None)
        if name is None:
            raise ExportError(f"{row.shard} has no image for sample {row.key}")
        pixels = cv2.imdecode(np.frombuffer(self.read(row.shard, name), np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise ExportError(f"cannot decode {name} in {row.shard}")
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if pixels.ndim == 3 else pixels


def medical_rows(release: Path) -> dict[tuple[str, str], dict[int, dict[str, _Row]]]:
    """(dataset, corruption) -> severity -> source key -> row, for every ok medical sample."""
    path = release / "samples.parquet"
    if not path.is_file():
        raise UsageError(f"{release} is not a built release: {path.name} is missing")
    table = pq.read_table(path, columns=["key", "source_key", "stage", "shift", "label", "status", "shard"])
    groups: dict[tuple[str, str], dict[int, dict[str, _Row]]] = defaultdict(lambda: defaultdict(dict))
    for row in table.to_pylist():
        if row["stage"] != "medical" or row["status"] != "ok":
            continue
        shift = json.loads(row["shift"])
        by_source = groups[(shift["dataset"], shift["corruption"])][int(shift["severity"])]
        by_source[row["source_key"]] = _Row(row["key"], row["shard"], json.loads(row["label"]))
    return groups


def _source_order(dataset: str, corruption: str, levels: dict[int, dict[str, _Row]]) -> list[str]:
    """Source keys present at every severity, sorted; ExportError when a severity lacks some."""
    keys = sorted(set().union(*(rows.keys() for rows in levels.values())))
    for severity, rows in sorted(levels.items()):
        missing = [k for k in keys if k not in rows]
        if missing:
            raise ExportError(
                f"{dataset}/{corruption}: severity {severity} lacks {len(missing)} of {len(keys)} source "
                f"images (e.g. {missing[0]}); the severity-major layout needs every image at every "
                "severity; see status/reason in samples.parquet")
    return keys


def _label_array(labels: list[Any]) -> np.ndarray | None:
    """N×L integer labels (ints become one column); None when any label is not integral."""
    rows = [[v] if isinstance(v, int) else v for v in labels]
    if not all(isinstance(r, list) and r and all(isinstance(v, int) for v in r) for r in rows):
        return None
    array = np.asarray(rows, dtype=np.int64)
    return array.astype(np.uint8) if array.size and 0 <= array.min() and array.max() < 256 else array


def write_corruption(target: str, order: list[tuple[int, str]], levels: dict[int, dict[str, _Row]],
                     reader: ShardReader, compress: bool) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Stream test_images (and test_labels) for `order` = [(severity, source key)] into one .npz;
    returns both arrays' shapes."""
    first = reader.image(levels[order[0][0]][order[0][1]])
    shape = (len(order), *first.shape)
    fs, path = filesystem(target)
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_open(fs, path) as handle, zipfile.ZipFile(handle, "w", compression=compression) as archive:
        with archive.open("test_images.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(
                member, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for severity, source_key in order:
                row = levels[severity][source_key]
                pixels = first if (severity, source_key) == order[0] else reader.image(row)
                if pixels.shape != first.shape:
                    raise ExportError(f"{row.key} is {pixels.shape}, the first image {first.shape}; "
                                      "MedMNIST-C arrays need one image size")
                member.write(np.ascontiguousarray(pixels, np.uint8).tobytes())
        labels = _label_array([levels[s][k].label for s, k in order])
        if labels is not None:
            with archive.open("test_labels.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, labels, allow_pickle=False)
    return shape, None if labels is None else labels.shape


def export_medmnist_c(release: str | Path, out: str | Path, compress: bool = True) -> list[ExportedFile]:
    """Write `{out}/{dataset}/{corruption}.npz` for every medical corruption in the release."""
    release, out = Path(release), Path(out)
    groups = medical_rows(release)
    if not groups:
        raise UsageError(f"{release} has no ok samples of stage 'medical' to export")
    reader, written = ShardReader(release), []
    for (dataset, corruption), levels in sorted(groups.items()):
        keys = _source_order(dataset, corruption, levels)
        severities = sorted(levels)
        order = [(s, k) for s in severities for k in keys]  # row i + s·N
        target = out / dataset / f"{corruption}.npz"
        shapes = write_corruption(str(target), order, levels, reader, compress)
        written.append(ExportedFile(target, dataset, corruption, len(order), severities, *shapes))
    return written
