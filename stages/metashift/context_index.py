"""Which images hold which object, and which object carries which attribute.

The index is built in one pass over the metadata that turns every object name
(and every object:attribute pair) into an integer code on first sight; the
rest is NumPy / SciPy over those codes:
- per name, the sorted image positions holding it (`objects`), and per name
  and attribute the positions where that name carries it (`attributes`);
- the names x images occurrence matrix and its transpose (images x names),
  from which the co-occurrence counts (names x names) and, per class, the
  images of every `class(context)` subset are sliced.
Image positions index `image_ids`, in metadata order.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from stages.metashift.scene_graphs import MetaShiftError, SceneRecord, object_lists, read_object_lists

ATTRIBUTE_PREFIX = "attr:"
_EMPTY = np.zeros(0, np.int64)


class _Codes(dict):
    """Interning table: a key's code is the number of keys seen before it."""

    def __missing__(self, key: Any) -> int:
        code = self[key] = len(self)
        return code


class ContextIndex:
    """Which images hold which object, and which object carries which attribute."""

    def __init__(
        self,
        image_ids: list[str],
        objects: dict[str, np.ndarray],
        attributes: dict[str, dict[str, np.ndarray]],
    ):
        self.image_ids = image_ids
        self.objects = objects  # name -> sorted image positions
        self.attributes = attributes  # name -> attribute -> sorted image positions
        self.names = sorted(objects)
        self._name_pos = {name: i for i, name in enumerate(self.names)}
        self._matrix: sparse.csr_matrix | None = None
        self._by_image: sparse.csr_matrix | None = None
        self._cooc: sparse.csr_matrix | None = None

    @classmethod
    def from_path(
        cls, path: str | Path, with_attributes: bool = True, progress: Callable[[int], None] | None = None
    ) -> ContextIndex:
        """The index of a metadata file (scene-graph JSON, CSV or Parquet), read once;
        `progress(bytes read)` as a scene-graph file is read."""
        return cls._from_lists(read_object_lists(path, progress), with_attributes)

    @classmethod
    def from_records(cls, records: Iterable[SceneRecord], with_attributes: bool = True) -> ContextIndex:
        """The index of a record stream; `with_attributes=False` skips the attribute
        index (object contexts only), which halves the work on attribute-rich metadata."""
        return cls._from_lists(((r.image_id, *object_lists(r)) for r in records), with_attributes)

    @classmethod
    def _from_lists(cls, lists: Iterable[tuple[str, list[str], list[Any]]], with_attributes: bool) -> ContextIndex:
        image_ids: list[str] = []
        seen: set[str] = set()
        object_codes, attribute_codes = _Codes(), _Codes()
        objects, object_counts = array("q"), array("q")
        attributes, attribute_counts = array("q"), array("q")
        add_objects, add_attributes = objects.extend, attributes.extend
        object_code, attribute_code = object_codes.__getitem__, attribute_codes.__getitem__
        for image_id, names, attribute_lists in lists:  # the hot loop: C-level maps only
            if image_id in seen:
                raise MetaShiftError(f"image id {image_id!r} appears twice in the metadata")
            seen.add(image_id)
            image_ids.append(image_id)
            add_objects(map(object_code, names))
            object_counts.append(len(names))
            if with_attributes:
                pairs = [(name, a) for name, values in zip(names, attribute_lists) if values for a in values]
                add_attributes(map(attribute_code, pairs))
                attribute_counts.append(len(pairs))
        by_object = _group_positions(objects, object_counts, len(object_codes))
        by_pair = _group_positions(attributes, attribute_counts, len(attribute_codes))
        attribute_index: dict[str, dict[str, np.ndarray]] = {}
        for (name, attribute), positions in zip(attribute_codes, by_pair):
            attribute_index.setdefault(name, {})[attribute] = positions
        return cls(image_ids, dict(zip(object_codes, by_object)), attribute_index)

    def images_with(self, name: str) -> np.ndarray:
        return self.objects.get(name, _EMPTY)

    def context_images(self, cls: str, context: str) -> np.ndarray:
        """All images of `cls(context)`, whatever its size."""
        if context.startswith(ATTRIBUTE_PREFIX):
            return self.attributes.get(cls, {}).get(context[len(ATTRIBUTE_PREFIX) :], _EMPTY)
        if context == cls:
            return _EMPTY
        return np.intersect1d(self.images_with(cls), self.images_with(context), assume_unique=True)

    def context_sizes(
        self,
        cls: str,
        kinds: Iterable[str],
        attributes: frozenset[str] | None = None,
        min_size: int = 1,
    ) -> dict[str, int]:
        """Size of every `cls(context)` subset with at least `min_size` images, by context
        (attribute contexts only from `attributes` when given)."""
        sizes: dict[str, int] = {}
        if "object" in kinds and cls in self._name_pos:
            cooc, row = self._cooccurrence(), self._name_pos[cls]
            cols, counts = (x[cooc.indptr[row] : cooc.indptr[row + 1]] for x in (cooc.indices, cooc.data))
            keep = (counts >= min_size) & (cols != row)
            sizes = dict(zip([self.names[c] for c in cols[keep].tolist()], counts[keep].tolist()))
        if "attribute" in kinds:
            for attribute, positions in self.attributes.get(cls, {}).items():
                if (attributes is None or attribute in attributes) and len(positions) >= min_size:
                    sizes[ATTRIBUTE_PREFIX + attribute] = len(positions)
        return dict(sorted(sizes.items()))

    def contexts_at_least(self, size: int) -> np.ndarray:
        """Per name, how many other objects share at least `size` images with it."""
        cooc = self._cooccurrence()
        rows = np.repeat(np.arange(cooc.shape[0]), np.diff(cooc.indptr))
        hits = (cooc.data >= size) & (cooc.indices != rows)
        return np.bincount(rows[hits], minlength=cooc.shape[0])

    def object_contexts(self, cls: str, contexts: list[str]) -> dict[str, np.ndarray]:
        """Images of `cls(context)` for object contexts of `cls`: the entries of the class's
        images in the images x names matrix, grouped by name with a stable sort (each group's
        images stay ascending); the names not asked for sort last and are left out."""
        if not contexts:
            return {}
        images = self.images_with(cls)
        by_image = self._images_by_name()
        starts = by_image.indptr[images]
        lengths = by_image.indptr[images + 1] - starts
        ends = np.cumsum(lengths)
        entry = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)
        k = len(contexts)
        wanted = np.full(len(self.names), k, np.int64)
        wanted[[self._name_pos[c] for c in contexts]] = np.arange(k)
        column = wanted[by_image.indices[entry]]
        order = np.argsort(_narrow(column, k + 1), kind="stable")
        bounds = np.zeros(k + 2, np.int64)
        np.cumsum(np.bincount(column, minlength=k + 1), out=bounds[1:])
        b = bounds.tolist()
        image = np.repeat(images, lengths)[order[: b[k]]]
        return {c: image[b[i] : b[i + 1]] for i, c in enumerate(contexts)}

    def _cooccurrence(self) -> sparse.csr_matrix:
        """names x names: images holding both objects."""
        if self._cooc is None:
            matrix = self._occurrence_matrix()
            self._cooc = (matrix @ matrix.T).tocsr()
            self._cooc.sort_indices()
        return self._cooc

    def _occurrence_matrix(self) -> sparse.csr_matrix:
        """names x images, 1 where the image holds the object."""
        if self._matrix is None:
            columns = [self.objects[n] for n in self.names]
            indptr = np.concatenate([[0], np.cumsum([len(c) for c in columns], dtype=np.int64)])
            self._matrix = sparse.csr_matrix(
                (np.ones(int(indptr[-1]), np.int64), np.concatenate(columns or [_EMPTY]), indptr),
                shape=(len(self.names), len(self.image_ids)),
            )
        return self._matrix

    def _images_by_name(self) -> sparse.csr_matrix:
        """images x names, 1 where the image holds the object (sorted column indices)."""
        if self._by_image is None:
            self._by_image = self._occurrence_matrix().T.tocsr()
            self._by_image.sort_indices()
        return self._by_image


def _group_positions(codes: array, counts: array, n_codes: int) -> list[np.ndarray]:
    """Per code, the sorted unique image positions of a (code per entry, entries per image)
    stream (entries arrive in ascending position, so a stable sort by code keeps each
    code's positions sorted)."""
    codes = np.frombuffer(codes, dtype=np.int64) if len(codes) else _EMPTY
    per_image = np.frombuffer(counts, dtype=np.int64) if len(counts) else _EMPTY
    positions = np.repeat(np.arange(len(per_image)), per_image)
    order = np.argsort(_narrow(codes, n_codes), kind="stable")
    codes, positions = codes[order], positions[order]
    keep = np.ones(len(codes), bool)
    keep[1:] = (codes[1:] != codes[:-1]) | (positions[1:] != positions[:-1])
    codes, positions = codes[keep], positions[keep]
    bounds = np.searchsorted(codes, np.arange(n_codes + 1))
    return [positions[bounds[i] : bounds[i + 1]].copy() for i in range(n_codes)]


def _narrow(values: np.ndarray, bound: int) -> np.ndarray:
    """Non-negative ints below `bound` as uint16 when they fit: NumPy's stable sort of
    16-bit keys is a radix sort, several times faster than its merge sort of int64."""
    return values.astype(np.uint16) if bound <= 1 << 16 else values
