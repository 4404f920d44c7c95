"""`kind: folder` — image files under a folder, class = first sub-folder.

    root/cat/0001.jpg   -> key cat__0001, label 0 (classes sorted: cat, dog)
    root/dog/a b.png    -> key dog__a_b-<hash>, label 1

Labels are class indices in sorted class-name order; `describe()` lists the
class names. A `labels_csv` (columns `file,label`, file relative to `path`)
overrides the folder classes: integer labels are kept, names are mapped to
indices in sorted order. Hidden files and folders (leading dot, e.g. macOS
`._x.jpg`) are skipped, folder symlinks are not followed, and a file symlink
pointing outside the folder is refused when loaded. Special files (a FIFO named
`x.jpg`), symlink loops and unreadable files become error rows, never a hang or
an aborted index; images over `max_pixels` are refused or downscaled (`oversize`). The index walks the tree
in sorted order and hashes file bytes; `load` checks the hash again so a file
changed after indexing cannot slip into a release with a stale sha256.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.sources.base import ContainedFiles, Loaded, Source, SourceError, SourceItem, SourceSpec, safe_key
from pipeline.sources.imagefile import MAX_PIXELS, MaxPixels, Oversize, decode_image
from pipeline.sources.unique_keys import UniqueKeys
from stages.base import ManifestPath

DEFAULT_EXTENSIONS = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]
# sha256 of no bytes: the hash of an item that could not be read while indexing


class FolderSpec(SourceSpec):
    kind: Literal["folder"]
    path: ManifestPath = Field(description="folder holding the images (class = first sub-folder)")
    labels_csv: ManifestPath | None = Field(default=None, description="CSV with columns file,label (file relative "
                                   "to path); overrides the sub-folder classes")
    extensions: list[str] = Field(default=DEFAULT_EXTENSIONS, min_length=1,
                                  description="file extensions to take, case-insensitive")
    recursive: bool = Field(default=True, description="descend into sub-folders; false takes only the "
                            "files directly in path (no classes)")
    max_pixels: MaxPixels = MAX_PIXELS
    oversize: Oversize = "refuse"

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        return sorted({"." + ext.lower().lstrip(".") for ext in value})


class FolderSource(Source):
    kind = "folder"
    Spec = FolderSpec

    def __init__(self, spec: FolderSpec):
        super().__init__(spec)
        self.root = Path(spec.path).expanduser()
        self.files = ContainedFiles(self.root, "source folder")
        self._labels: tuple[Callable[[str], Any], list[str]] | None = None

    def index(self) -> Iterator[SourceItem]:
        label_of, _ = self._label_table()
        keys = UniqueKeys()
        for rel in self._walk():
            # macOS stores names decomposed (NFD): keys and label lookups use NFC so that the
            # same file gets the same key and label on every machine
            name = unicodedata.normalize("NFC", rel)
            key = keys.claim(_key_for(name), identity=name)
            yield SourceItem(key=key, sha256=self.files.sha256(rel), label=label_of(name), ref=rel)

    def load(self, item: SourceItem) -> Loaded:
        rel: str = item.ref
        if rel.endswith("/"):
            raise SourceError(f"cannot list folder {rel.rstrip('/')}: {_listing_failure(self.root / rel)}")
        data = self.files.read(rel, item.sha256)
        pixels, notes = decode_image(data, rel, self.spec.max_pixels, self.spec.oversize)
        meta = {"path": rel, "notes": notes}
        if isinstance(item.label, int):
            meta["class_name"] = self._label_table()[1][item.label]   # filters prompt with it
        return Loaded(pixels, meta)

    def __getstate__(self) -> dict[str, Any]:
        # per-process state is rebuilt where it is used
        return {**self.__dict__, "_labels": None}

    def describe(self) -> dict[str, Any]:
        _, classes = self._label_table()
        return {**super().describe(), "classes": classes}

    # -- index -------------------------------------------------------------

    def _walk(self) -> Iterator[str]:
        """Relative POSIX paths of the image files, depth-first, names sorted per folder."""
        if not self.root.is_dir():
            raise SourceError(f"folder source: {self.root} is not a folder")
        yield from self._walk_folder(self.root, PurePosixPath())

    def _walk_folder(self, folder: Path, rel: PurePosixPath) -> Iterator[str]:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            if folder == self.root:
                raise SourceError(f"folder source: cannot list {folder}: {exc.strerror}") from None
            # an unreadable sub-folder is one error row (ref ends with "/"), not an aborted index
            yield f"{rel}/"
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if self.spec.recursive:
                    yield from self._walk_folder(Path(entry.path), rel / entry.name)
            elif _extension(entry.name) in self.spec.extensions and not _is_folder_link(entry):
                # special files (FIFOs, sockets, devices), symlink loops and unreadable files are
                # indexed too: loading each fails with its reason, so it becomes an error row
                yield str(rel / entry.name)

    def _label_table(self) -> tuple[Callable[[str], Any], list[str]]:
        """(label of a relative path, class names)."""
        if self._labels is None:
            if self.spec.labels_csv:
                self._labels = _read_labels_csv(Path(self.spec.labels_csv).expanduser())
            else:
                self._labels = self._folder_labels()
        return self._labels

    def _folder_labels(self) -> tuple[Callable[[str], Any], list[str]]:
        if not self.spec.recursive or not self.root.is_dir():
            return (lambda rel: None), []
        classes = sorted(entry.name for entry in os.scandir(self.root)
                         if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."))
        class_index = {name: i for i, name in enumerate(classes)}

        def label_of(rel: str) -> int | None:
            parts = PurePosixPath(rel).parts
            return class_index.get(parts[0]) if len(parts) > 1 else None   # files at the root: unlabelled

        return label_of, classes



def _listing_failure(folder: Path) -> str:
    try:
        os.scandir(folder).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return "it could not be listed while indexing"


def _is_folder_link(entry: os.DirEntry) -> bool:
    """A symlink to a folder (not followed); a broken or looping link is not one."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _key_for(rel: str) -> str:
    """`cat/0001.jpg` -> `cat__0001`; anything unsafe is cleaned (with a hash) by `safe_key`."""
    stem = rel[: len(rel) - len(_extension(rel))] if _extension(rel) else rel
    return safe_key("__".join(PurePosixPath(stem).parts))


def _read_labels_csv(path: Path) -> tuple[Callable[[str], Any], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise SourceError(f"folder source: cannot read labels_csv {path}: {exc.strerror}") from None
    if not rows or not {"file", "label"} <= set(rows[0]):
        found = ", ".join(rows[0]) if rows else "no rows"
        raise SourceError(f"folder source: labels_csv {path} needs columns file,label (found: {found})")
    raw = {unicodedata.normalize("NFC", str(PurePosixPath(row["file"].strip()))): row["label"].strip()
           for row in rows if (row["label"] or "").strip()}      # an empty label means unlabelled
    if all(_is_int(value) for value in raw.values()):
        return {file: int(value) for file, value in raw.items()}.get, []
    classes = sorted(set(raw.values()))
    index = {name: i for i, name in enumerate(classes)}
    return {file: index[value] for file, value in raw.items()}.get, classes


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


SOURCE = FolderSource
