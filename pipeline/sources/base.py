"""The contract of a source of clean images.

A source streams its index — (key, content sha256, label, ref) per item, in a
deterministic order — without decoding pixels, and loads one item's pixels on
demand inside a task. Planning only ever sees the index.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class SourceError(Exception):
    """An item could not be read; becomes a `status=error` row with this reason."""


class SourceSpec(BaseModel):
    """Base of every source's manifest model; subclasses add `kind: Literal[...]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class SourceItem:
    key: str
    sha256: str
    label: Any = None
    ref: Any = None


@dataclass
class Loaded:
    """One decoded item: uint8 HxWxC pixels (None for pixel-less sources) and
    metadata (annotations; `notes` lists conversions applied while decoding)."""

    image: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)


class Source:
    """Base class; subclasses set `kind` and `Spec` and implement the two methods."""

    kind: ClassVar[str]
    Spec: ClassVar[type[SourceSpec]]
    # whether loaded items carry meta["class_name"] (filters that prompt with the class need it);
    # None when it depends on the data (e.g. a folder with or without class sub-folders)
    provides_class_names: ClassVar[bool | None] = None

    def __init__(self, spec: SourceSpec):
        self.spec = spec

    def index(self) -> Iterator[SourceItem]:
        raise NotImplementedError

    def load(self, item: SourceItem) -> Loaded:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.spec.model_dump(mode="json")}


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(text: str, max_len: int = 120) -> str:
    """A WebDataset-safe key from any name: only [A-Za-z0-9_-], no dots, no
    path parts; a short hash keeps distinct inputs distinct after cleaning."""
    cleaned = _UNSAFE.sub("_", text).strip("_") or "item"
    if cleaned == text and len(text) <= max_len:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: max_len - 9]}-{digest}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
