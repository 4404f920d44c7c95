"""`class(context)` subsets: the images that hold a class and a context.

Two kinds of context:
- an object context `bed`: another object present in the image, so
  `dog(bed)` = images with a dog and a bed;
- an attribute context `attr:white`: an attribute of the class object
  itself, so `dog(attr:white)` = images with a dog annotated white.

A subset is kept when it has at least `min_subset_size` images (25); a class
is kept when it has at least `min_subsets_per_class` kept subsets (6, i.e.
"more than 5"). Image sets are sorted int arrays of positions in
`ContextIndex.image_ids`, so intersections are vectorised.
"""

from __future__ import annotations

import difflib
from array import array
from collections.abc import Iterable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse

from stages.metashift.metagraph import MetaGraph, build_meta_graph
from stages.metashift.ontology import OFFICIAL_ATTRIBUTES
from stages.metashift.scene_graphs import MetaShiftError, SceneRecord

ATTRIBUTE_PREFIX = "attr:"
ContextKind = Literal["object", "attribute"]
AttributeVocabulary = Literal["official", "any"]


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_subset_size: int = Field(default=25, ge=1, description="a subset needs at least this many images")
    min_subsets_per_class: int = Field(
        default=6,
        ge=1,
        description="a class needs at least this many kept subsets (the published rule 'more than 5' is 6)",
    )


def subset_name(cls: str, context: str) -> str:
    return f"{cls}({context})"


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
        self._cooc: sparse.csr_matrix | None = None

    @classmethod
    def from_records(cls, records: Iterable[SceneRecord], with_attributes: bool = True) -> ContextIndex:
        """The index of a record stream; `with_attributes=False` skips the attribute
        index (object contexts only), which halves the work on attribute-rich metadata."""
        image_ids: list[str] = []
        seen: set[str] = set()
        object_codes: dict[str, int] = {}
        attribute_codes: dict[tuple[str, str], int] = {}
        obj_pairs, attr_pairs = (array("q"), array("q")), (array("q"), array("q"))
        add_object, add_object_image = obj_pairs[0].append, obj_pairs[1].append
        add_attribute, add_attribute_image = attr_pairs[0].append, attr_pairs[1].append
        for position, record in enumerate(records):  # the hot loop: no calls beyond appends and lookups
            if record.image_id in seen:
                raise MetaShiftError(f"image id {record.image_id!r} appears twice in the metadata")
            seen.add(record.image_id)
            image_ids.append(record.image_id)
            for obj in record.objects:
                code = object_codes.get(obj.name)
                if code is None:
                    code = object_codes[obj.name] = len(object_codes)
                add_object(code)
                add_object_image(position)
                if not with_attributes:
                    continue
                for attribute in obj.attributes:
                    key = (obj.name, attribute)
                    code = attribute_codes.get(key)
                    if code is None:
                        code = attribute_codes[key] = len(attribute_codes)
                    add_attribute(code)
                    add_attribute_image(position)
        objects = dict(zip(object_codes, _group_positions(obj_pairs, len(object_codes))))
        attributes: dict[str, dict[str, np.ndarray]] = {}
        for (name, attribute), positions in zip(
            attribute_codes, _group_positions(attr_pairs, len(attribute_codes))
        ):
            attributes.setdefault(name, {})[attribute] = positions
        return cls(image_ids, objects, attributes)

    def images_with(self, name: str) -> np.ndarray:
        return self.objects.get(name, np.zeros(0, np.int64))

    def context_images(self, cls: str, context: str) -> np.ndarray:
        """All images of `cls(context)`, whatever its size."""
        if context.startswith(ATTRIBUTE_PREFIX):
            return self.attributes.get(cls, {}).get(context[len(ATTRIBUTE_PREFIX) :], np.zeros(0, np.int64))
        if context == cls:
            return np.zeros(0, np.int64)
        return np.intersect1d(self.images_with(cls), self.images_with(context), assume_unique=True)

    def context_sizes(
        self,
        cls: str,
        kinds: Iterable[ContextKind],
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
        """Images of `cls(context)` for object contexts of `cls`, by one sparse slice."""
        if not contexts:
            return {}
        images = self.images_with(cls)
        rows = [self._name_pos[c] for c in contexts]
        block = self._occurrence_matrix()[rows][:, images].tocsr()
        block.sort_indices()
        return {c: images[block.indices[block.indptr[k] : block.indptr[k + 1]]] for k, c in enumerate(contexts)}

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
            rows = np.concatenate(
                [np.full(len(self.objects[n]), i) for i, n in enumerate(self.names)]
                or [np.zeros(0, np.int64)]
            )
            cols = np.concatenate([self.objects[n] for n in self.names] or [np.zeros(0, np.int64)])
            self._matrix = sparse.csr_matrix(
                (np.ones(len(rows), np.int64), (rows, cols)), shape=(len(self.names), len(self.image_ids))
            )
        return self._matrix


def _group_positions(pairs: tuple[array, array], n_codes: int) -> list[np.ndarray]:
    """Per code, the sorted unique image positions (pairs arrive in ascending position,
    so a stable sort by code keeps each code's positions sorted)."""
    codes = np.frombuffer(pairs[0], dtype=np.int64)
    positions = np.frombuffer(pairs[1], dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    codes, positions = codes[order], positions[order]
    keep = np.ones(len(codes), bool)
    keep[1:] = (codes[1:] != codes[:-1]) | (positions[1:] != positions[:-1])
    codes, positions = codes[keep], positions[keep]
    bounds = np.searchsorted(codes, np.arange(n_codes + 1))
    return [positions[bounds[i] : bounds[i + 1]].copy() for i in range(n_codes)]


class SubsetCatalog:
    """Kept subsets and meta-graphs of an index under given thresholds, with name checks."""

    def __init__(
        self,
        index: ContextIndex,
        thresholds: Thresholds | None = None,
        kinds: Iterable[ContextKind] = ("object",),
        attribute_vocabulary: AttributeVocabulary = "official",
    ):
        self.index, self.thresholds, self.kinds = index, thresholds or Thresholds(), tuple(kinds)
        self.attribute_vocabulary = attribute_vocabulary
        self.vocabulary = OFFICIAL_ATTRIBUTES if attribute_vocabulary == "official" else None
        self._subsets: dict[str, dict[str, np.ndarray]] = {}
        self._graphs: dict[str, MetaGraph] = {}

    def candidate_subsets(self, cls: str) -> dict[str, np.ndarray]:
        """Subsets of `cls` that pass the size threshold, by context (class threshold not applied)."""
        if cls not in self._subsets:
            kept = list(self.index.context_sizes(cls, self.kinds, self.vocabulary, self.thresholds.min_subset_size))
            objects = self.index.object_contexts(cls, [c for c in kept if not c.startswith(ATTRIBUTE_PREFIX)])
            self._subsets[cls] = {
                ctx: objects[ctx] if ctx in objects else self.index.context_images(cls, ctx) for ctx in kept
            }
        return self._subsets[cls]

    def classes(self) -> list[str]:
        """Classes with enough kept subsets, sorted (counted without materialising subsets)."""
        size, need = self.thresholds.min_subset_size, self.thresholds.min_subsets_per_class
        kept = np.zeros(len(self.index.names), np.int64)
        if "object" in self.kinds:
            kept += self.index.contexts_at_least(size)
        if "attribute" in self.kinds:
            attributes = self.index.attributes
            vocabulary = self.vocabulary
            kept += [
                sum(len(p) >= size for a, p in attributes.get(n, {}).items() if vocabulary is None or a in vocabulary)
                for n in self.index.names
            ]
        return [
            name
            for name, n in zip(self.index.names, kept.tolist())
            if n >= need and len(self.index.images_with(name)) >= size
        ]

    def forget(self, cls: str) -> None:
        """Drop the cached subsets and meta-graph of a class (bounded memory over many classes)."""
        self._subsets.pop(cls, None)
        self._graphs.pop(cls, None)

    def subsets(self, cls: str) -> dict[str, np.ndarray]:
        """Kept subsets of a class that passes the class threshold; clear errors otherwise."""
        if cls not in self.index.objects:
            raise MetaShiftError(f"unknown class {cls!r}{_suggest(cls, self.index.names)}")
        kept = self.candidate_subsets(cls)
        if len(kept) < self.thresholds.min_subsets_per_class:
            raise MetaShiftError(
                f"class {cls!r} has {len(kept)} subsets with >= {self.thresholds.min_subset_size} images; "
                f"a class needs >= {self.thresholds.min_subsets_per_class} (thresholds.min_subsets_per_class)"
            )
        return kept

    def subset(self, cls: str, context: str) -> np.ndarray:
        if context.startswith(ATTRIBUTE_PREFIX) and "attribute" not in self.kinds:
            raise MetaShiftError(
                f"{subset_name(cls, context)} is an attribute context, but only {'/'.join(self.kinds)} "
                f"contexts are enabled (add attribute: --contexts object,attribute, or contexts: [object, attribute])"
            )
        if context.startswith(ATTRIBUTE_PREFIX) and self.vocabulary is not None:
            if context[len(ATTRIBUTE_PREFIX) :] not in self.vocabulary:
                raise MetaShiftError(
                    f"{subset_name(cls, context)}: {context[len(ATTRIBUTE_PREFIX):]!r} is not in the official "
                    f"attribute ontology (attribute_vocabulary: any / --attribute-vocabulary any allows it)"
                )
        kept = self.subsets(cls)
        if context in kept:
            return kept[context]
        size = len(self.index.context_images(cls, context))
        if size:
            raise MetaShiftError(
                f"subset {subset_name(cls, context)} has {size} images, fewer than "
                f"thresholds.min_subset_size = {self.thresholds.min_subset_size}"
            )
        raise MetaShiftError(f"unknown context {context!r} for class {cls!r}{_suggest(context, list(kept))}")

    def meta_graph(self, cls: str) -> MetaGraph:
        if cls not in self._graphs:
            self._graphs[cls] = build_meta_graph(cls, self.subsets(cls))
        return self._graphs[cls]


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
