"""Zarr v3 store per config: images (N,H,W,C) uint8, labels, keys, valid mask.

Each work unit owns a fixed, contiguous region that is exactly one Zarr shard
along axis 0 (shard length = outputs per unit), so parallel tasks never write
the same shard file — misaligned regions silently lose data (dask#12583,
zarr#3514). Rejected/error slots stay zero with valid=False.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zarr


@dataclass(frozen=True)
class ZarrLayout:
    path: str              # URL or local path of <config>.zarr
    length: int            # N slots
    shard_len: int         # slots per work unit
    height: int
    width: int
    channels: int

    def region(self, unit_index: int) -> tuple[int, int]:
        start = unit_index * self.shard_len
        return start, min(start + self.shard_len, self.length)

    def as_attrs(self) -> dict[str, Any]:
        return {"length": self.length, "shard_len": self.shard_len,
                "image_shape": [self.height, self.width, self.channels]}


def ensure_store(layout: ZarrLayout, attrs: dict[str, Any]) -> bool:
    """Create the store's arrays unless an identical layout exists; True if (re)created."""
    try:
        group = zarr.open_group(layout.path, mode="r")
        if group.attrs.get("layout") == layout.as_attrs():
            return False
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        pass
    group = zarr.create_group(store=layout.path, zarr_format=3, overwrite=True)
    n, s = layout.length, layout.shard_len
    hwc = (layout.height, layout.width, layout.channels)
    group.create_array("images", shape=(n, *hwc), chunks=(1, *hwc), shards=(s, *hwc), dtype="uint8",
                       fill_value=0)
    group.create_array("labels", shape=(n,), chunks=(s,), dtype="int64", fill_value=-1)
    group.create_array("keys", shape=(n,), chunks=(s,), dtype=str, fill_value="")
    group.create_array("valid", shape=(n,), chunks=(s,), dtype="bool", fill_value=False)
    group.attrs.update({**attrs, "layout": layout.as_attrs()})
    return True


def fit_image(image: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        image = image[:, :, None] if image.ndim == 2 else image
    if image.shape[2] != channels:
        image = np.repeat(image, 3, axis=2) if channels == 3 else image.mean(2, keepdims=True).astype(np.uint8)
    return image


def write_region(layout: ZarrLayout, unit_index: int, slots: list[tuple[str, Any, np.ndarray | None]]) -> str:
    """Write one unit's region: slots of (key, label, image or None). Returns a digest."""
    start, stop = layout.region(unit_index)
    if len(slots) > stop - start:
        raise ValueError(f"unit {unit_index} has {len(slots)} samples for a region of {stop - start}")
    n = stop - start
    images = np.zeros((n, layout.height, layout.width, layout.channels), np.uint8)
    labels = np.full(n, -1, np.int64)
    keys = np.full(n, "", dtype=object)
    valid = np.zeros(n, bool)
    for i, (key, label, image) in enumerate(slots):
        keys[i] = key
        if isinstance(label, (int, np.integer)):
            labels[i] = int(label)
        if image is not None:
            images[i] = fit_image(image, layout.height, layout.width, layout.channels)
            valid[i] = True
    group = zarr.open_group(layout.path, mode="r+")
    group["images"][start:stop] = images
    group["labels"][start:stop] = labels
    group["keys"][start:stop] = keys.astype(str)
    group["valid"][start:stop] = valid
    return region_digest(images, labels, keys)


def region_digest(images: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> str:
    """The digest provenance records per region; `verify` recomputes it from the store. The
    `valid` mask is left out: a filtered release rewrites it after the release-wide rules, and
    verify checks it slot by slot against samples.parquet instead."""
    h = hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    h.update("\n".join(str(k) for k in np.asarray(keys).tolist()).encode())
    return h.hexdigest()
