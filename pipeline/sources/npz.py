"""`kind: npz` — one split of a MedMNIST-style `.npz` file.

The file holds `{split}_images` (uint8 N×H×W or N×H×W×3) and `{split}_labels`
(N×L, L = 14 for chestmnist). Items are keyed `{flag}-{split}-{index:06d}`,
where `flag` (the dataset name) defaults to the file name `{flag}.npz` or
`{flag}_{size}.npz`. Labels are lists of ints (one per label column).

Pixels are never loaded all at once: `np.savez` stores its arrays
uncompressed, so the `.npy` header inside the zip member is parsed and the
images are memory-mapped at the member's data offset. A compressed file
(`np.savez_compressed`) is streamed instead: the index decompresses it once,
and loads seek forward through one open member (cheap when items are read in
index order, as the engine does).
"""

from __future__ import annotations

import re
import struct
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from pydantic import Field

from pipeline.sources.base import Loaded, Source, SourceError, SourceItem, SourceSpec, safe_key, sha256_bytes
from stages.base import ManifestPath

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")          # zip local file header, 30 bytes
_FLAG_FROM_NAME = re.compile(r"^(?P<flag>.+?)(?:_(?P<size>\d+))?$")
_HASH_BLOCK_BYTES = 8 << 20


class NpzSpec(SourceSpec):
    kind: Literal["npz"]
    path: ManifestPath = Field(description="MedMNIST-style .npz file")
    split: Literal["train", "val", "test"] = "test"
    flag: str | None = Field(default=None, description="dataset name, e.g. pathmnist; default: "
                             "inferred from the file name {flag}.npz or {flag}_{size}.npz")


@dataclass(frozen=True)
class _ImageArray:
    """Where the images of one split lie inside the .npz."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    header_bytes: int            # size of the .npy header inside the member
    data_offset: int | None      # absolute file offset of the pixels; None when the member is compressed

    @property
    def item_bytes(self) -> int:
        return int(np.prod(self.shape[1:])) * self.dtype.itemsize


class NpzSource(Source):
    kind = "npz"
    Spec = NpzSpec
    provides_class_names = False

    def __init__(self, spec: NpzSpec):
        super().__init__(spec)
        self.path = Path(spec.path).expanduser()
        self.flag = safe_key(spec.flag or _flag_from_file_name(self.path))
        self._drop_caches()

    def index(self) -> Iterator[SourceItem]:
        labels = self._labels()
        prefix = f"{self.flag}-{self.spec.split}"
        for i, sha256 in enumerate(self._item_hashes()):
            yield SourceItem(key=f"{prefix}-{i:06d}", sha256=sha256, label=labels[i].tolist(), ref=i)

    def load(self, item: SourceItem) -> Loaded:
        i = int(item.ref)
        layout = self._layout()
        if not 0 <= i < layout.shape[0]:
            raise SourceError(f"{self.path}: index {i} outside {layout.member} of {layout.shape[0]} images")
        pixels = self._image(i)
        if sha256_bytes(pixels.tobytes()) != item.sha256:
            raise SourceError(f"image {i} of {self.path} changed since it was indexed")
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return Loaded(np.ascontiguousarray(pixels), {"flag": self.flag, "split": self.spec.split, "index": i})

    def describe(self) -> dict[str, Any]:
        layout = self._layout()
        height, width = layout.shape[1:3]
        channels = layout.shape[3] if len(layout.shape) == 4 else 1
        labels = self._labels()
        return {**super().describe(), "flag": self.flag, "items": layout.shape[0],
                "image_shape": [height, width, channels], "label_width": labels.shape[1],
                "compressed": layout.data_offset is None}

    # -- caches are per process: dropped when the source is sent to a worker --

    def _drop_caches(self) -> None:
        self._cached_layout: _ImageArray | None = None
        self._cached_labels: np.ndarray | None = None
        self._memmap: np.ndarray | None = None
        self._stream: tuple[zipfile.ZipFile, IO[bytes]] | None = None
        self._stream_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "path": self.path, "flag": self.flag}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._drop_caches()

    # -- reading ------------------------------------------------------------

    def _layout(self) -> _ImageArray:
        if self._cached_layout is None:
            self._cached_layout = _read_layout(self.path, f"{self.spec.split}_images")
        return self._cached_layout

    def _labels(self) -> np.ndarray:
        """int64 N×L; rows become each item's list of labels."""
        if self._cached_labels is None:
            count = self._layout().shape[0]
            member = f"{self.spec.split}_labels"
            with np.load(self.path, allow_pickle=False) as arrays:
                if member not in arrays.files:
                    raise SourceError(f"{self.path} has no {member} (arrays: {', '.join(arrays.files)})")
                labels = np.asarray(arrays[member])
            labels = labels.reshape(labels.shape[0], int(np.prod(labels.shape[1:])))   # N -> N×1
            if len(labels) != count:
                raise SourceError(f"{self.path}: {member} has {len(labels)} rows for {count} images")
            self._cached_labels = labels.astype(np.int64)
        return self._cached_labels

    def _item_hashes(self) -> Iterator[str]:
        layout = self._layout()
        block = max(1, _HASH_BLOCK_BYTES // max(1, layout.item_bytes))
        if layout.data_offset is not None:
            images = self._images_memmap()
            for start in range(0, layout.shape[0], block):
                chunk = np.ascontiguousarray(images[start:start + block])
                yield from (sha256_bytes(image.tobytes()) for image in chunk)
            return
        with zipfile.ZipFile(self.path) as archive, archive.open(layout.member) as member:
            member.seek(layout.header_bytes)
            for start in range(0, layout.shape[0], block):
                count = min(block, layout.shape[0] - start)
                data = _read_exactly(member, count * layout.item_bytes, self.path)
                yield from (sha256_bytes(data[k * layout.item_bytes:(k + 1) * layout.item_bytes])
                            for k in range(count))

    def _image(self, i: int) -> np.ndarray:
        layout = self._layout()
        if layout.data_offset is not None:
            return np.array(self._images_memmap()[i])
        with self._stream_lock:
            if self._stream is None:
                archive = zipfile.ZipFile(self.path)
                self._stream = (archive, archive.open(layout.member))
            member = self._stream[1]
            member.seek(layout.header_bytes + i * layout.item_bytes)   # forward seeks only decompress the gap
            data = _read_exactly(member, layout.item_bytes, self.path)
        return np.frombuffer(data, dtype=layout.dtype).reshape(layout.shape[1:])

    def _images_memmap(self) -> np.ndarray:
        if self._memmap is None:
            layout = self._layout()
            self._memmap = np.memmap(self.path, dtype=layout.dtype, mode="r", offset=layout.data_offset,
                                     shape=layout.shape)
        return self._memmap


def _flag_from_file_name(path: Path) -> str:
    stem = path.name[:-4] if path.name.lower().endswith(".npz") else path.name
    return _FLAG_FROM_NAME.match(stem)["flag"] if stem else "npz"


def _read_layout(path: Path, member_name: str) -> _ImageArray:
    """Parse the .npy header of `member_name` inside the zip without reading the pixels."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SourceError(f"npz source: cannot open {path}: {exc}") from None
    with archive:
        names = [name.removesuffix(".npy") for name in archive.namelist()]
        if member_name not in names:
            raise SourceError(f"{path} has no {member_name} (arrays: {', '.join(names)})")
        info = archive.getinfo(member_name + ".npy")
        with archive.open(info) as member:
            shape, fortran_order, dtype = _read_npy_header(member, path)
            header_bytes = member.tell()
        data_offset = None
        if info.compress_type == zipfile.ZIP_STORED:
            data_offset = _member_data_start(path, info) + header_bytes
    _check_images(path, member_name, shape, dtype, fortran_order)
    return _ImageArray(info.filename, shape, dtype, header_bytes, data_offset)


def _read_npy_header(member: IO[bytes], path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise SourceError(f"{path}: .npy format version {version} is not supported (expected 1.0 or 2.0)")


def _member_data_start(path: Path, info: zipfile.ZipInfo) -> int:
    # the local header's name/extra lengths may differ from the central directory's
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04":
        raise SourceError(f"{path}: broken zip local header for {info.filename}")
    name_length, extra_length = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _check_images(path: Path, member: str, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> None:
    expected = "uint8 N×H×W or N×H×W×3, C order"
    channels_ok = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))
    if dtype != np.uint8 or not channels_ok or fortran:
        order = "Fortran order" if fortran else "C order"
        raise SourceError(f"{path}: {member} must be {expected}; got {dtype} {'×'.join(map(str, shape))}, "
                          f"{order}")


def _read_exactly(stream: IO[bytes], size: int, path: Path) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise SourceError(f"{path}: image data ends early ({len(data)} of {size} bytes)")
    return data


SOURCE = NpzSource
