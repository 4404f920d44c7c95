"""Readers of per-image object metadata: GQA / Visual Genome scene graphs and plain tables.

Both yield `SceneRecord`s one image at a time, so a multi-GB metadata file is
never held in memory: the scene-graph reader parses the top-level JSON object
entry by entry with `json.JSONDecoder.raw_decode` over a sliding text buffer,
the table reader streams CSV rows or Parquet record batches.

Scene graphs (`*_sceneGraphs.json`):
    {"<image id>": {"width": W, "height": H,
                    "objects": {"<object id>": {"name": "dog", "x": .., "y": .., "w": .., "h": ..,
                                                "attributes": ["white"], "relations": [...]}}}}
Tables (`.csv`, `.parquet`) have columns `image_id`, `objects` and optionally
`attributes`. A cell is a list (Parquet), a JSON list string (`["dog", "bed"]`)
or a `;`-separated string (`dog;bed`). Attributes are written `object:attribute`
(`dog:white`) and attach to every instance of that object in the image.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

_CHUNK_CHARS = 1 << 20
_WHITESPACE = " \t\n\r"
_STR = {str}
_ATTRIBUTE_LIST = {list, type(None)}


class MetaShiftError(ValueError):
    """Unusable metadata or split request; the message says what was expected and what was found."""


class SceneObject(NamedTuple):  # a tuple: ~350k are built per 100 MB of scene graphs
    name: str
    attributes: tuple[str, ...] = ()


class SceneRecord(NamedTuple):
    image_id: str
    objects: tuple[SceneObject, ...]


def read_records(path: str | Path) -> Iterator[SceneRecord]:
    """Records of a scene-graph JSON, a CSV or a Parquet table, chosen by file suffix."""
    path = Path(path)
    if not path.is_file():
        raise MetaShiftError(
            f"metadata file {path} does not exist (expected *_sceneGraphs.json, .csv or .parquet)"
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_scene_graphs(path)
    if suffix in (".csv", ".parquet"):
        return read_table(path)
    raise MetaShiftError(
        f"metadata file {path}: expected a .json scene-graph file or a .csv/.parquet "
        f"table, got suffix {suffix or '(none)'!r}"
    )


# -- scene-graph JSON --------------------------------------------------------


def read_scene_graphs(path: str | Path) -> Iterator[SceneRecord]:
    for image_id, graph in iter_json_object(path):
        yield _record_from_graph(image_id, graph, path)


def read_object_lists(
    path: str | Path, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[str, list[str], list[Any]]]:
    """(image id, object names, attribute lists) per image, checked as `read_records` checks
    them but without building records: the index pass interns the names straight away.
    An attribute list is a list of strings, or None / [] for none. `progress(bytes read)`
    is called as a scene-graph file is read (tables do not report)."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        for record in read_records(path):
            yield record.image_id, *object_lists(record)
        return
    for image_id, graph in iter_json_object(path, progress=progress):
        yield image_id, *_object_lists(image_id, graph, path)


def _object_lists(image_id: str, graph: Any, path: str | Path) -> tuple[list[str], list[Any]]:
    """Names and attribute lists of one image graph. The checks run over whole lists at C
    speed; anything irregular goes through `_record_from_graph`, which names the problem."""
    objects = graph.get("objects") if type(graph) is dict else None
    if type(objects) is dict:
        try:
            names = [obj["name"] for obj in objects.values()]  # TypeError / KeyError: not {"name": ...}
            attributes = [obj.get("attributes") for obj in objects.values()]
        except (TypeError, KeyError):
            pass
        else:
            if (
                set(map(type, names)) <= _STR
                and set(map(type, attributes)) <= _ATTRIBUTE_LIST
                and set(map(type, chain.from_iterable(filter(None, attributes)))) <= _STR
            ):
                return names, attributes
    return object_lists(_record_from_graph(image_id, graph, path))


def object_lists(record: SceneRecord) -> tuple[list[str], list[Any]]:
    """A record's object names and their attribute lists, in object order."""
    return [o.name for o in record.objects], [o.attributes for o in record.objects]


def _record_from_graph(image_id: str, graph: Any, path: str | Path) -> SceneRecord:
    objects = graph.get("objects") if isinstance(graph, dict) else None
    if not isinstance(objects, dict):
        raise MetaShiftError(
            f"{path}: image {image_id!r}: expected an object with an 'objects' mapping, "
            f"got {json.dumps(graph)[:80]}"
        )
    parsed = []
    for object_id, obj in objects.items():
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise MetaShiftError(
                f"{path}: image {image_id!r}, object {object_id!r}: expected "
                f"{{'name': str, ...}}, got {json.dumps(obj)[:80]}"
            )
        attributes = obj.get("attributes")
        if attributes is None or attributes == []:
            parsed.append(SceneObject(obj["name"]))
        elif type(attributes) is list and set(map(type, attributes)) <= {str}:
            parsed.append(SceneObject(obj["name"], tuple(attributes)))
        else:
            raise MetaShiftError(
                f"{path}: image {image_id!r}, object {object_id!r}: expected 'attributes' to be "
                f"a list of strings, got {json.dumps(attributes)[:80]}"
            )
    return SceneRecord(str(image_id), tuple(parsed))


class _TextStream:
    """A text file read in chunks, with a cursor into the unconsumed part."""

    def __init__(self, handle, chunk_chars: int, progress: Callable[[int], None] | None = None):
        self.handle, self.chunk_chars, self.progress = handle, chunk_chars, progress
        self.buf, self.pos, self.eof = "", 0, False

    def fill(self) -> bool:
        """Drop the consumed prefix and append a chunk; False once the file is exhausted."""
        if self.eof:
            return False
        try:
            chunk = self.handle.read(self.chunk_chars)
        except UnicodeDecodeError as exc:
            raise MetaShiftError(f"{self.handle.name}: not valid UTF-8 text ({exc.reason})") from None
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        self.eof = not chunk
        if self.progress is not None:
            self.progress(self.handle.buffer.tell())
        return bool(chunk)

    def peek(self) -> str:
        """The next non-whitespace character ("" at end of file), without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos : self.pos + 1]

    def expect(self, char: str, where: str) -> None:
        found = self.peek()
        if found != char:
            raise MetaShiftError(f"{where}: expected {char!r}, found {found or 'end of file'!r}")
        self.pos += 1

    def decode(self, decoder: json.JSONDecoder, where: str) -> Any:
        """The next JSON value; reads more text while the value is cut by the buffer end."""
        self.peek()
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.fill():
                    continue
                raise MetaShiftError(f"{where}: invalid JSON: {exc.msg} (at character {exc.pos})") from None
            # a number that ends exactly at the buffer end may continue in the next chunk
            if end == len(self.buf) and self.fill():
                continue
            self.pos = end
            return value


def iter_json_object(
    path: str | Path, chunk_chars: int = _CHUNK_CHARS, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[str, Any]]:
    """(key, value) of a top-level JSON object, one entry at a time; `progress(bytes read)`
    after each chunk.

    Memory stays at about one chunk plus the largest single value, whatever
    the file size.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        stream = _TextStream(handle, chunk_chars, progress)
        stream.expect("{", f"{path}: start of file")
        if stream.peek() == "}":
            stream.pos += 1
            if stream.peek():
                raise MetaShiftError(f"{path}: unexpected text after the closing '}}'")
            return
        while True:
            key = stream.decode(decoder, f"{path}: object key")
            if not isinstance(key, str):
                raise MetaShiftError(f"{path}: expected a string key, got {key!r}")
            stream.expect(":", f"{path}: after key {key!r}")
            yield key, stream.decode(decoder, f"{path}: value of {key!r}")
            separator = stream.peek()
            stream.pos += 1
            if separator == "}":
                if stream.peek():
                    raise MetaShiftError(
                        f"{path}: unexpected text after the closing '}}': {stream.buf[stream.pos : stream.pos + 20]!r}"
                    )
                return
            if separator != ",":
                raise MetaShiftError(
                    f"{path}: after the value of {key!r}: expected ',' or '}}', "
                    f"found {separator or 'end of file'!r}"
                )


# -- tables ------------------------------------------------------------------


def read_table(path: str | Path) -> Iterator[SceneRecord]:
    path = Path(path)
    rows = _parquet_rows(path) if path.suffix.lower() == ".parquet" else _csv_rows(path)
    for line, row in rows:
        where = f"{path}: row {line}"
        if row.get("image_id") in (None, ""):
            raise MetaShiftError(f"{where}: missing image_id")
        yield _record_from_row(
            str(row["image_id"]),
            _cell_list(row.get("objects"), where),
            _cell_list(row.get("attributes"), where),
            where,
        )


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        try:
            reader = csv.DictReader(handle)
            _check_columns(path, reader.fieldnames or [])
            yield from enumerate(reader, start=2)
        except UnicodeDecodeError as exc:
            raise MetaShiftError(f"{path}: not valid UTF-8 text ({exc.reason})") from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    _check_columns(path, table.schema_arrow.names)
    line = 0
    for batch in table.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = {"image_id", "objects"} - set(columns)
    if missing:
        raise MetaShiftError(
            f"{path}: table needs columns image_id, objects (and optionally attributes); "
            f"missing {', '.join(sorted(missing))}, found {', '.join(columns) or 'none'}"
        )


def _cell_list(cell: Any, where: str) -> list[str]:
    if cell is None:
        return []
    if isinstance(cell, (list, tuple)):
        if not all(isinstance(v, (str, int, float)) for v in cell):
            raise MetaShiftError(f"{where}: cell {str(cell)[:60]!r} must be a flat list of names")
        return [str(v) for v in cell]
    text = str(cell).strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetaShiftError(f"{where}: cell {text[:60]!r} is not a valid JSON list: {exc.msg}") from None
        if not isinstance(values, list) or not all(isinstance(v, (str, int, float)) for v in values):
            raise MetaShiftError(f"{where}: cell {text[:60]!r} must be a flat JSON list of names")
        return [str(v) for v in values]
    return [part.strip() for part in text.split(";") if part.strip()]


def _record_from_row(image_id: str, names: list[str], attributes: list[str], where: str) -> SceneRecord:
    by_object: dict[str, list[str]] = {name: [] for name in names}
    for entry in attributes:
        name, sep, attribute = entry.partition(":")
        if not sep or not attribute:
            raise MetaShiftError(f"{where}: attribute {entry!r} must be written object:attribute")
        if name not in by_object:
            raise MetaShiftError(
                f"{where}: attribute {entry!r} names object {name!r}, which is not among "
                f"the row's objects ({', '.join(names) or 'none'})"
            )
        by_object[name].append(attribute)
    return SceneRecord(image_id, tuple(SceneObject(name, tuple(by_object[name])) for name in names))
