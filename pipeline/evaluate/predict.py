"""Building blocks shared by the shard and clean-source evaluators: the options that
change predictions, batching by image shape, and predictions as Parquet bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from pipeline.evaluate.models import resolve_device


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 64
    topk: int = 5
    device: str = "auto"          # auto | cpu | cuda
    gpu: bool = False             # submit tasks with resources={"GPU": 1}

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "topk": self.topk, "device": resolve_device(self.device)}


def batches(samples, size: int):
    """Runs of at most `size` consecutive images of one shape (COCO images differ in size)."""
    keys, images = [], []
    for key, image in samples:
        if images and (len(images) == size or image.shape != images[0].shape):
            yield keys, images
            keys, images = [], []
        keys.append(key)
        images.append(image)
    if images:
        yield keys, images


def parquet_bytes(keys: list[str], records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"key": keys}
    for name in (records[0] if records else {}):
        columns[name] = [r[name] for r in records]
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    return sink.getvalue()
