"""Pixel-less source for text-to-image stages: one item per (class, seed).

Item keys read `<cls:03d>_<class>-seed<NNNN>`; the label is the class index
in `classes`; `load()` returns no pixels and meta {class_name, class_index,
seed}. The seed is the generation seed named in the manifest, so the scale-0
image of a (class, seed) is the same under every slider, as in CNS-Bench.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, model_validator

from pipeline.sources.base import Loaded, Source, SourceItem, SourceSpec

_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


class PromptsSpec(SourceSpec):
    kind: Literal["prompts"]
    classes: list[str] = Field(min_length=1, description="class names; a class's label is its index here")
    seeds_per_class: int | None = Field(
        default=None, ge=1, le=100_000, description="seeds 0..N-1 for every class"
    )
    seeds: list[int] | None = Field(default=None, min_length=1, description="explicit seeds for every class")

    @model_validator(mode="after")
    def _one_seed_rule(self) -> PromptsSpec:
        if (self.seeds_per_class is None) == (self.seeds is None):
            raise ValueError("give exactly one of seeds_per_class (N) or seeds ([s0, s1, ...])")
        if self.seeds is not None:
            if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
                raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        if len(set(self.classes)) != len(self.classes) or not all(c.strip() for c in self.classes):
            raise ValueError("classes must be distinct, non-empty names")
        return self

    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else list(range(self.seeds_per_class or 0))


def class_slug(index: int, name: str) -> str:
    return f"{index:03d}_{_UNSAFE.sub('_', name).strip('_') or 'class'}"


class PromptsSource(Source):
    kind = "prompts"
    Spec = PromptsSpec
    provides_class_names = True

    def index(self) -> Iterator[SourceItem]:
        for label, name in enumerate(self.spec.classes):
            for seed in self.spec.seed_list():
                ref = {"class_name": name, "class_index": label, "seed": seed}
                # pixel-less: the "content" hash is that of the item's definition
                digest = hashlib.sha256(json.dumps(ref, sort_keys=True).encode()).hexdigest()
                yield SourceItem(
                    key=f"{class_slug(label, name)}-seed{seed:04d}", sha256=digest, label=label, ref=ref
                )

    def load(self, item: SourceItem) -> Loaded:
        return Loaded(image=None, meta=dict(item.ref))


SOURCE = PromptsSource
