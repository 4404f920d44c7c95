"""The contract of a source of clean images.

A source streams its index — (key, content sha256, label, ref) per item, in a
deterministic order — without decoding pixels, and loads one item's pixels on
demand inside a task. Planning only ever sees the index.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

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
    # metadata known at index time that reaches each sample's provenance (e.g. MetaShift's
    # split tags): part of the shard fingerprint, unlike `ref`, which only says where to read
    meta: dict[str, Any] | None = None


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


def check_unchanged(name: str, data: bytes, sha256: str) -> None:
    """An item must still have the bytes it was indexed with (a stale hash would lie in provenance)."""
    found = sha256_bytes(data)
    if found != sha256:
        raise SourceError(f"{name} changed since it was indexed (sha256 {found[:12]}…, index has {sha256[:12]}…)")


# stands in for an item that cannot be read at index time; `load` then raises the reason
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_CHUNK = 1 << 20


class ContainedFiles:
    """Files read strictly inside one folder: a path or symlink that leads outside is
    refused, and a file changed since it was indexed is caught by its sha256."""

    def __init__(self, root: Path, what: str):
        self.root = Path(root).expanduser()
        self.what = what                      # e.g. "source folder", named in errors
        self._resolved: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_resolved": None}   # resolved again where it is used

    def resolve(self, rel: str) -> Path:
        try:
            if self._resolved is None:
                self._resolved = self.root.resolve()
            path = (self.root / rel).resolve()
        except (OSError, RuntimeError) as exc:      # e.g. a symlink loop
            raise SourceError(f"cannot resolve {rel}: {exc}") from None
        if not path.is_relative_to(self._resolved):
            raise SourceError(f"refused {rel}: it points outside the {self.what} (to {path})")
        return path

    def open_regular(self, rel: str) -> IO[bytes]:
        """Open for reading; a FIFO, socket or device is refused instead of blocking the reader."""
        path = self.resolve(rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise SourceError(f"image file not found: {path}") from None
        except OSError as exc:
            raise SourceError(f"cannot read {rel}: {exc.strerror or exc}") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a special file"
            raise SourceError(f"cannot read {rel}: {kind}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def read(self, rel: str, sha256: str | None = None) -> bytes:
        with self.open_regular(rel) as handle:
            try:
                data = handle.read()
            except OSError as exc:
                raise SourceError(f"cannot read {rel}: {exc.strerror or exc}") from None
        if sha256 is not None:
            check_unchanged(rel, data, sha256)
        return data

    def sha256(self, rel: str) -> str:
        """The file's sha256, or EMPTY_SHA256 when it cannot be read (loading it then fails with the reason)."""
        try:
            digest = hashlib.sha256()
            with self.open_regular(rel) as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            return digest.hexdigest()
        except (SourceError, OSError):
            return EMPTY_SHA256
