"""`kind: webdataset` — samples of existing WebDataset tar shards.

`urls` is a list and/or brace patterns (`shards/train-{000..009}.tar`) of
local paths or fsspec URLs; `.tar.gz` etc. are decompressed transparently.
The index streams each shard once with `tarfile`, groups adjacent members by
WebDataset key (the member name up to the first dot of its file name), hashes
the image member and reads the label from `.cls`. Each item's ref is
(url, member, data offset, size), so `load` seeks straight to the member
instead of rescanning the shard.

Keys are `safe_key(__key__)`; when two shards reuse a key, the later one is
prefixed by its shard number (`00003_000123`) so every key stays unique.
A sample without an image member is kept as an item that fails to load, so
it becomes an error row rather than vanishing.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import fsspec
from braceexpand import braceexpand
from fsspec.utils import infer_compression
from pydantic import Field, field_validator

from pipeline.sources.base import (
    EMPTY_SHA256,
    Loaded,
    Source,
    SourceError,
    SourceItem,
    SourceSpec,
    check_unchanged,
    safe_key,
    sha256_bytes,
)
from pipeline.sources.imagefile import MAX_PIXELS, MaxPixels, Oversize, decode_image
from pipeline.sources.unique_keys import UniqueKeys
from stages.base import ManifestPath

DEFAULT_IMAGE_EXTENSIONS = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "gif"]


class WebDatasetSpec(SourceSpec):
    kind: Literal["webdataset"]
    urls: ManifestPath | list[ManifestPath] = Field(
        description="shard paths or fsspec URLs, one or a list; brace patterns such as data-{000..009}.tar "
                    "are expanded")
    image_extensions: list[str] = Field(default=DEFAULT_IMAGE_EXTENSIONS, min_length=1,
                                        description="member extensions taken as the image, first match wins")
    max_pixels: MaxPixels = MAX_PIXELS
    oversize: Oversize = "refuse"

    @field_validator("urls")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value:
            raise ValueError("at least one shard path or URL is required")
        return value

    @field_validator("image_extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        return [ext.lower().lstrip(".") for ext in value]


@dataclass(frozen=True)
class _MemberRef:
    name: str
    offset: int          # of the member's data in the (decompressed) tar stream
    size: int
    sha256: str


@dataclass
class _Sample:
    """Members of one WebDataset sample seen so far while streaming a shard."""

    key: str
    images: dict[str, _MemberRef] = field(default_factory=dict)      # by extension
    label: Any = None


class WebDatasetSource(Source):
    kind = "webdataset"
    Spec = WebDatasetSpec
    provides_class_names = False

    def shard_urls(self) -> list[str]:
        patterns = [self.spec.urls] if isinstance(self.spec.urls, str) else self.spec.urls
        return [url for pattern in patterns for url in braceexpand(pattern)]

    def index(self) -> Iterator[SourceItem]:
        keys = UniqueKeys()
        for shard_number, url in enumerate(self.shard_urls()):
            for sample in self._samples_of_shard(url):
                key = safe_key(sample.key)
                key = keys.claim(key, identity=f"{url}#{sample.key}", alternative=f"{shard_number:05d}_{key}")
                yield self._item(key, url, sample)

    def load(self, item: SourceItem) -> Loaded:
        url, member, offset, size = item.ref
        if member is None:
            raise SourceError(f"sample {item.key} of {url} has no image member "
                              f"(looked for .{', .'.join(self.spec.image_extensions)})")
        data = _read_range(url, offset, size, member)
        check_unchanged(f"{member} in {url}", data, item.sha256)
        pixels, notes = decode_image(data, f"{member} in {url}", self.spec.max_pixels, self.spec.oversize)
        return Loaded(pixels, {"url": url, "member": member, "notes": notes})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shards": self.shard_urls()}

    def _item(self, key: str, url: str, sample: _Sample) -> SourceItem:
        for ext in self.spec.image_extensions:
            if ext in sample.images:
                ref = sample.images[ext]
                return SourceItem(key=key, sha256=ref.sha256, label=sample.label,
                                  ref=(url, ref.name, ref.offset, ref.size))
        return SourceItem(key=key, sha256=EMPTY_SHA256, label=sample.label, ref=(url, None, 0, 0))

    def _samples_of_shard(self, url: str) -> Iterator[_Sample]:
        wanted = set(self.spec.image_extensions)
        current: _Sample | None = None
        read_extensions = wanted | {"cls"}
        needs_bytes = lambda name: _split_member_name(name)[1] in read_extensions
        for member, data in _stream_members(url, needs_bytes):
            key, ext = _split_member_name(member.name)
            if current is None or key != current.key:
                if current is not None:
                    yield current
                current = _Sample(key)
            if ext in wanted and ext not in current.images:
                current.images[ext] = _MemberRef(member.name, member.offset_data, member.size,
                                                 sha256_bytes(data))
            elif ext == "cls":
                current.label = _parse_label(data)
        if current is not None:
            yield current


def _stream_members(url: str, needs_bytes: Callable[[str], bool]
                    ) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """File members of one shard in order, with their bytes where asked for; one pass, no seeking."""
    last_member = "<start>"
    try:
        with fsspec.open(url, "rb", compression="infer") as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.isfile():
                    last_member = member.name
                    data = tar.extractfile(member).read() if needs_bytes(member.name) else None
                    yield member, data
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise SourceError(f"webdataset source: cannot read shard {url} (after member {last_member}): "
                          f"{exc}") from None


def _split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: key = path up to the first dot of the file name; the rest is the extension."""
    folder, _, filename = name.rpartition("/")
    stem, dot, ext = filename.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def _parse_label(data: bytes) -> int | str:
    text = data.decode("utf-8", "replace").strip()
    return int(text) if text.lstrip("-").isdigit() else text


@lru_cache(maxsize=256)
def _filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str, str | None]:
    # resolving a URL to its filesystem costs more than reading a small member; do it once per shard
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path, infer_compression(path)


def _read_range(url: str, offset: int, size: int, member: str) -> bytes:
    try:
        fs, path, compression = _filesystem(url)
        with fs.open(path, "rb", compression=compression) as stream:
            stream.seek(offset)
            data = stream.read(size)
    except OSError as exc:
        raise SourceError(f"cannot read {member} from {url}: {exc}") from None
    if len(data) != size:
        raise SourceError(f"cannot read {member} from {url}: shard is shorter than indexed "
                          f"({len(data)} of {size} bytes at offset {offset})")
    return data


SOURCE = WebDatasetSource
