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
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stages.metashift.context_index import ATTRIBUTE_PREFIX, ContextIndex
from stages.metashift.metagraph import MetaGraph, build_meta_graph, build_meta_graphs
from stages.metashift.ontology import OFFICIAL_ATTRIBUTES
from stages.metashift.scene_graphs import MetaShiftError

__all__ = ["ATTRIBUTE_PREFIX", "ContextIndex", "SubsetCatalog", "Thresholds", "subset_name"]

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
            kept = list(self._kept_contexts(cls))
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
        if cls not in self._subsets:
            self.check(cls)
        return self.candidate_subsets(cls)

    def check(self, cls: str) -> int:
        """The number of kept subsets of a class that passes the class threshold, counted
        without building any; the errors of `subsets` otherwise."""
        if cls not in self.index.objects:
            raise MetaShiftError(f"unknown class {cls!r}{_suggest(cls, self.index.names)}")
        size = self.thresholds.min_subset_size
        n = len(self._subsets[cls]) if cls in self._subsets else len(self._kept_contexts(cls))
        if n < self.thresholds.min_subsets_per_class:
            raise MetaShiftError(
                f"class {cls!r} has {n} subsets with >= {size} images; "
                f"a class needs >= {self.thresholds.min_subsets_per_class} (thresholds.min_subsets_per_class)"
            )
        return n

    def _kept_contexts(self, cls: str) -> dict[str, int]:
        return self.index.context_sizes(cls, self.kinds, self.vocabulary, self.thresholds.min_subset_size)

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

    def groups(self, classes: list[str], max_cells: int = 1 << 22, max_classes: int | None = None) -> list[list[str]]:
        """`classes` (each passing `check`) cut, in order, into runs of at most `max_cells`
        subset pairs (a larger class alone) and at most `max_classes` classes: the units
        of work whose meta-graphs `prepare` builds together."""
        return _grouped([(cls, self.check(cls)) for cls in classes], max_cells, max_classes)

    def prepare(self, classes: Iterable[str], max_cells: int = 1 << 22) -> Iterator[str]:
        """Yield each of `classes` once its subsets and meta-graph are cached. They are built
        a group at a time (`groups`), so the communities of many small classes are found
        together; `forget` each class when done to keep memory bounded. A class that fails
        (unknown, too few subsets) is left to fail when it is asked for."""
        counted: list[tuple[str, int]] = []  # the classes since the last failing one
        for cls in classes:
            try:
                counted.append((cls, self.check(cls)))
            except MetaShiftError:
                for group in _grouped(counted, max_cells):  # the classes before it first, as asked
                    yield from self._build_group(group)
                counted = []
                yield cls
        for group in _grouped(counted, max_cells):
            yield from self._build_group(group)

    def _build_group(self, group: list[str]) -> Iterator[str]:
        todo = [cls for cls in group if cls not in self._graphs]
        for cls, graph in zip(todo, build_meta_graphs([(cls, self.subsets(cls)) for cls in todo])):
            self._graphs[cls] = graph
        yield from group


def _grouped(counted: list[tuple[str, int]], max_cells: int, max_classes: int | None = None) -> list[list[str]]:
    """Classes with their subset counts n, cut in order into runs of at most `max_cells`
    n x n cells (a larger class alone) and at most `max_classes` classes."""
    found: list[list[str]] = []
    cells = 0
    for cls, n in counted:
        if not found or cells + n * n > max_cells or (max_classes and len(found[-1]) >= max_classes):
            found.append([])
            cells = 0
        found[-1].append(cls)
        cells += n * n
    return found


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
