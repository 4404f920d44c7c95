"""WebDataset shard writer: deterministic tars (sorted members, fixed mtime/owner)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable

import cv2
import fsspec
import numpy as np

from pipeline.writers.files import atomic_open

FIXED_MTIME = 0


def encode_image(image: np.ndarray, encoding: str, quality: int) -> tuple[str, bytes]:
    """uint8 HxWxC (C = 1 or 3, RGB) -> (extension, bytes). OpenCV's encoders are
    deterministic for a given library version and several times faster than PIL's."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected a uint8 HxWx1 or HxWx3 image, got {image.dtype} {image.shape}")
    bgr = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if encoding == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        ext = "png"
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        ext = "jpg"
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {encoding}")
    return ext, buf.tobytes()


def write_tar(fs: fsspec.AbstractFileSystem, path: str,
              samples: Iterable[tuple[str, dict[str, bytes]]]) -> tuple[str, int]:
    """Write samples {ext: bytes} keyed by key as one tar; returns (sha256, bytes).

    Samples are written in key order and each sample's members in extension
    order, so the same content always gives the same bytes.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in sorted(samples, key=lambda s: s[0]):
            for ext in sorted(members):
                data = members[ext]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    payload = buffer.getvalue()
    with atomic_open(fs, path) as handle:
        handle.write(payload)
    return hashlib.sha256(payload).hexdigest(), len(payload)
