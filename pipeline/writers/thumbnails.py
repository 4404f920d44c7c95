"""Small JPEG thumbnails of rejected samples, so a report can show what filters removed
(rejected samples never enter the shards)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from pipeline.writers.files import atomic_open


def save_rejected_thumbnails(fs: Any, root: str, config: str, keys: list[str], images: list[Any],
                             max_side: int = 96) -> list[str]:
    """Small JPEGs of rejected samples at rejected/<config>/<key>.jpg so a report can show them
    (rejected samples never enter the shards). `fs`, `root`: an fsspec filesystem and release root."""
    written = []
    for key, image in zip(keys, images):
        if image is None or np.asarray(image).dtype != np.uint8:
            continue
        thumb = Image.fromarray(np.asarray(image).squeeze()).convert("RGB")
        thumb.thumbnail((max_side, max_side))
        path = f"{root}/rejected/{config}/{key}.jpg"
        with atomic_open(fs, path) as handle:
            thumb.save(handle, format="JPEG", quality=80)
        written.append(path)
    return written
