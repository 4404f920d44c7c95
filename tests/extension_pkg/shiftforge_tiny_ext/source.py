"""`tiny_gradient`: `count` square images, item i has pixel (y, x) = (i * 40 + y + x) mod 256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.sources.base import Loaded, Source, SourceItem, SourceSpec


class GradientSpec(SourceSpec):
    kind: Literal["tiny_gradient"]
    count: int = Field(default=3, ge=1, le=1000)
    size: int = Field(default=16, ge=8, le=256)


def gradient(i: int, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.repeat(((i * 40 + y + x) % 256).astype(np.uint8)[..., None], 3, axis=2)


class GradientSource(Source):
    kind = "tiny_gradient"
    Spec = GradientSpec
    provides_class_names = False

    def index(self) -> Iterator[SourceItem]:
        for i in range(self.spec.count):
            data = gradient(i, self.spec.size).tobytes()
            yield SourceItem(key=f"gradient-{i}", sha256=hashlib.sha256(data).hexdigest(), label=i, ref=i)

    def load(self, item: SourceItem) -> Loaded:
        return Loaded(image=gradient(item.ref, self.spec.size))


SOURCE = GradientSource
