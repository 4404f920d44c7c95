"""Manifest files read with bounds, so no input can exhaust memory or hang the process.

A manifest is at most MAX_MANIFEST_BYTES of UTF-8 text in a regular file; its
YAML nests at most MAX_DEPTH levels and, with every alias expanded, holds at
most MAX_NODES nodes (an alias "bomb" of nested references is refused before
anything expands it; a self-referencing alias is refused too). Duplicate keys
in a mapping are an error instead of the last one silently winning.
"""

from __future__ import annotations

import codecs
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_MANIFEST_BYTES = 1 << 20      # 1 MiB; the largest manifest shipped is a few kB
MAX_DEPTH = 64
MAX_NODES = 100_000
BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
        codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}


class BoundExceeded(ValueError):
    """The manifest breaks a bound; the message is one line."""


def read_manifest_text(path: Path) -> str:
    """The file's text: a regular file (not a FIFO or device), at most MAX_MANIFEST_BYTES, UTF-8."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise BoundExceeded("not a regular file")
    with path.open("rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise BoundExceeded(f"larger than {MAX_MANIFEST_BYTES} bytes ({info.st_size} bytes); "
                            "a manifest lists sources and shifts, not data")
    return decode_utf8(data)


def decode_utf8(data: bytes) -> str:
    for bom, name in BOMS.items():   # UTF-32 first: its LE mark starts with UTF-16's
        if data.startswith(bom):
            raise BoundExceeded(f"encoded as {name}; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BoundExceeded(f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}); "
                            "save it as UTF-8") from None


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting depth and refuses duplicate keys."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise BoundExceeded(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise BoundExceeded(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def expanded_size(root: yaml.Node, limit: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> int:
    """Nodes in the document with every alias expanded; raises past `limit` nodes or `max_depth`
    levels (aliases can nest deeper than the text does) or on a cycle."""
    shapes: dict[int, tuple[int, int]] = {}   # id(node) -> (expanded size, height)
    open_nodes: set[int] = set()

    def shape(node: yaml.Node, depth: int) -> tuple[int, int]:
        if id(node) in open_nodes:
            raise BoundExceeded(f"an alias refers to a node that contains it (line {node.start_mark.line + 1})")
        if id(node) not in shapes:
            if depth > max_depth:
                raise BoundExceeded(f"nested deeper than {max_depth} levels once its aliases are expanded")
            open_nodes.add(id(node))
            children = [] if isinstance(node, yaml.ScalarNode) else (
                node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair])
            parts = [shape(child, depth + 1) for child in children]
            open_nodes.discard(id(node))
            shapes[id(node)] = (1 + sum(p[0] for p in parts), 1 + max((p[1] for p in parts), default=0))
        size, height = shapes[id(node)]
        if size > limit:
            raise BoundExceeded(f"more than {limit} values once its aliases are expanded")
        if depth + height - 1 > max_depth:
            raise BoundExceeded(f"nested deeper than {max_depth} levels once its aliases are expanded")
        return size, height

    return shape(root, 1)[0]


def load_bounded_yaml(text: str) -> Any:
    """Parse one YAML document within the bounds above (yaml.YAMLError for malformed YAML)."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
