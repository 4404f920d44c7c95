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
