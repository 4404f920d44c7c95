"""Atomic file output on any fsspec filesystem (local paths and URLs such as s3://)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")


@contextmanager
def atomic_open(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """Write to a temporary sibling, fsync, then rename over `path`.

    A killed writer leaves only a `*.tmp-*` file, never a truncated file under
    the final name. On object stores the upload itself is atomic.
    """
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            if isinstance(fs, LocalFileSystem):
                os.fsync(handle.fileno())
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    with atomic_open(fs, path) as handle:
        handle.write(data)


def sha256_file(fs: fsspec.AbstractFileSystem, path: str, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(block):
            h.update(chunk)
    return h.hexdigest()


def remove_temporaries(fs: fsspec.AbstractFileSystem, root: str) -> int:
    """Delete `*.tmp-*` leftovers of killed writers under root; returns how many."""
    leftovers = [p for p in fs.glob(f"{root}/**/*.tmp-*")] if fs.exists(root) else []
    for p in leftovers:
        fs.rm(p, recursive=True)
    return len(leftovers)


class ReleaseStore:
    """A release root on any fsspec filesystem, addressed by paths relative to it.

    Local roots keep their plain paths (and append+fsync); other roots (s3://,
    memory://, ...) go through the same calls, so build, journal, verify and
    provenance never branch on where the release lives.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = str(out)
        self.fs, self.root = filesystem(self.out)
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def url(self, rel: str) -> str:
        """What another library (zarr, pyarrow) should open: a plain path locally, else a URL."""
        return self.path(rel) if self.local else self.fs.unstrip_protocol(self.path(rel))

    def exists(self, rel: str = "") -> bool:
        return self.fs.exists(self.path(rel))

    def isdir(self, rel: str) -> bool:
        return self.fs.isdir(self.path(rel))

    def size(self, rel: str) -> int:
        return self.fs.size(self.path(rel))

    def sha256(self, rel: str) -> str:
        return sha256_file(self.fs, self.path(rel))

    def glob(self, pattern: str) -> list[str]:
        """Sorted paths relative to the root that match `pattern` (e.g. "data/*/*.tar")."""
        prefix = len(self.root) + 1
        return sorted(p[prefix:] for p in self.fs.glob(self.path(pattern)))

    def rm(self, rel: str) -> None:
        self.fs.rm(self.path(rel), recursive=True)

    def remove_empty_folders(self, rel: str) -> None:
        """Remove empty folders directly under `rel`; object stores have none to leave behind."""
        if not self.local:
            return
        for folder in self.glob(f"{rel}/*"):
            if self.isdir(folder) and not self.fs.ls(self.path(folder)):
                self.fs.rmdir(self.path(folder))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_table(self, rel: str, columns: list[str] | None = None):
        """A Parquet file as a pyarrow Table. Read from bytes: Arrow's reader on a Python
        file object can abort the interpreter at exit."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(self.read_bytes(rel)), columns=columns)

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def open(self, rel: str, mode: str = "rb") -> IO:
        return self.fs.open(self.path(rel), mode)

    def makedirs(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

    def write_atomic(self, rel: str, data: bytes) -> None:
        atomic_write(self.fs, self.path(rel), data)

    def append_line(self, rel: str, line: str) -> None:
        """Append one line durably: append + fsync locally; object stores cannot
        append, so there the whole file is rewritten atomically."""
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        if not self.local:
            self.write_atomic(rel, (self.read_bytes(rel) if self.exists(rel) else b"") + data)
            return
        self.fs.makedirs(self.root, exist_ok=True)
        with open(self.path(rel), "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
