"""Train/test splits from class(context) subsets, with their meta-graph distances.

(a) `domain_split` — domain generalisation: per class, training contexts and
    test contexts. The test set is built first; images that hold two of the
    requested classes are dropped everywhere (their label is ambiguous); the
    training set is the union of the training subsets minus every test image.
(b) `subpopulation_split` — per class a majority and a minority group of
    contexts. From each group `test_per_group` images go to a balanced test
    set; training takes every remaining majority image and exactly
    `minority_count` remaining minority images, drawn with a fixed seed.
    Images in both groups of a class are dropped.
(c) `sweep_mixes` — for one test subset, training mixes of `mix_size`
    contexts at evenly spaced ranks of their distance d to the test subset.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stages.metashift.metagraph import EMBED_DIM, MetaGraph
from stages.metashift.scene_graphs import MetaShiftError
from stages.metashift.subsets import SubsetCatalog, subset_name

Contexts = dict[str, Annotated[list[str], Field(min_length=1)]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[str] = Field(min_length=2, description="class names; label = position in this list")

    def _check_groups(self, first: str, second: str) -> None:
        """Both context maps name exactly the classes, and no class uses a context in both."""
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes {self.classes} repeat a name")
        for group in (first, second):
            keys = set(getattr(self, group))
            if keys != set(self.classes):
                raise ValueError(
                    f"{group} must give contexts for exactly the classes {self.classes}; got {sorted(keys)}"
                )
        for cls in self.classes:
            shared = set(getattr(self, first)[cls]) & set(getattr(self, second)[cls])
            if shared:
                raise ValueError(
                    f"class {cls!r}: contexts {sorted(shared)} are in both {first} and {second}; "
                    f"the two must not overlap"
                )


class DomainSplit(_Request):
    mode: Literal["domain"] = "domain"
    train: Contexts = Field(description="class -> training contexts, e.g. {dog: [cabinet, bed]}")
    test: Contexts = Field(description="class -> test contexts, e.g. {dog: [shelf]}")

    @model_validator(mode="after")
    def _disjoint(self) -> DomainSplit:
        self._check_groups("train", "test")
        return self


class SubpopulationSplit(_Request):
    mode: Literal["subpopulation"] = "subpopulation"
    majority: Contexts = Field(description="class -> majority contexts, e.g. {cat: [sofa, bed]}")
    minority: Contexts = Field(description="class -> minority contexts, e.g. {cat: [bench, bike]}")
    minority_count: int = Field(ge=0, description="minority images per class in the training set")
    test_per_group: int = Field(default=25, ge=1, description="test images per class and group")
    seed: int = Field(default=0, ge=0, description="seed of the image draws")

    @model_validator(mode="after")
    def _disjoint(self) -> SubpopulationSplit:
        self._check_groups("majority", "minority")
        return self


SplitRequest = Annotated[DomainSplit | SubpopulationSplit, Field(discriminator="mode")]


@dataclass(frozen=True)
class Assignment:
    image_id: str
    cls: str
    label: int
    split: Literal["train", "test"]
    subsets: tuple[str, ...]
    group: str | None = None

    def meta(self) -> dict[str, Any]:
        meta = {
            "split": self.split,
            "class": self.cls,
            "image_id": self.image_id,
            "subsets": list(self.subsets),
        }
        return meta if self.group is None else {**meta, "group": self.group}


@dataclass
class SplitResult:
    assignments: list[Assignment]  # sorted by (split, label, image id)
    report: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {"train": 0, "test": 0}
        for a in self.assignments:
            out[a.split] += 1
        return out


def make_split(catalog: SubsetCatalog, request: DomainSplit | SubpopulationSplit) -> SplitResult:
    if isinstance(request, DomainSplit):
        return domain_split(catalog, request)
    return subpopulation_split(catalog, request)


# -- (a) domain generalisation ----------------------------------------------


def domain_split(catalog: SubsetCatalog, request: DomainSplit) -> SplitResult:
    test_pools = {c: _union(catalog, c, request.test[c]) for c in request.classes}
    train_pools = {c: _union(catalog, c, request.train[c]) for c in request.classes}
    ambiguous = _in_several_classes(catalog, request.classes)
    test = {c: np.setdiff1d(test_pools[c], ambiguous) for c in request.classes}
    all_test = np.unique(np.concatenate(list(test.values())))
    train = {c: np.setdiff1d(train_pools[c], np.union1d(ambiguous, all_test)) for c in request.classes}
    _require_nonempty(train, "train")
    _require_nonempty(test, "test")

    assignments = []
    for label, cls in enumerate(request.classes):
        assignments += _assign(catalog, cls, label, "train", train[cls], request.train[cls])
        assignments += _assign(catalog, cls, label, "test", test[cls], request.test[cls])
    report = {
        "mode": "domain",
        "classes": {},
        "dropped": {
            "in_several_classes": _overlap(ambiguous, *test_pools.values(), *train_pools.values()),
            "train_images_in_test": sum(_overlap(train_pools[c], all_test) for c in request.classes),
        },
    }
    for cls in request.classes:
        report["classes"][cls] = {
            "counts": {"train": int(len(train[cls])), "test": int(len(test[cls]))},
            **distance_report(catalog.meta_graph(cls), request.train[cls], request.test[cls]),
        }
    return SplitResult(_sorted(assignments), _with_definitions(report, catalog))


# -- (b) subpopulation shift -------------------------------------------------


def subpopulation_split(catalog: SubsetCatalog, request: SubpopulationSplit) -> SplitResult:
    rng = np.random.default_rng(request.seed)
    ambiguous = _in_several_classes(catalog, request.classes)
    assignments, report = [], {"mode": "subpopulation", "seed": request.seed, "classes": {}}
    for label, cls in enumerate(request.classes):
        majority = _union(catalog, cls, request.majority[cls])
        minority = _union(catalog, cls, request.minority[cls])
        both = np.union1d(ambiguous, np.intersect1d(majority, minority))
        dropped = _overlap(both, majority, minority)
        majority, minority = np.setdiff1d(majority, both), np.setdiff1d(minority, both)
        test_major = _draw(rng, majority, request.test_per_group, f"{cls} majority test (test_per_group)")
        test_minor = _draw(rng, minority, request.test_per_group, f"{cls} minority test (test_per_group)")
        train_major = np.setdiff1d(majority, test_major)
        train_minor = _draw(
            rng,
            np.setdiff1d(minority, test_minor),
            request.minority_count,
            f"{cls} minority train (minority_count)",
        )
        for split, images, group in (
            ("train", train_major, "majority"),
            ("train", train_minor, "minority"),
            ("test", test_major, "majority"),
            ("test", test_minor, "minority"),
        ):
            contexts = getattr(request, group)[cls]
            assignments += _assign(catalog, cls, label, split, images, contexts, group)
        report["classes"][cls] = {
            "counts": {
                "train": {"majority": int(len(train_major)), "minority": int(len(train_minor))},
                "test": {"majority": int(len(test_major)), "minority": int(len(test_minor))},
            },
            "dropped_in_both_groups_or_classes": dropped,
            **distance_report(catalog.meta_graph(cls), request.majority[cls], request.minority[cls]),
        }
    return SplitResult(_sorted(assignments), _with_definitions(report, catalog))


def _overlap(images: np.ndarray, *pools: np.ndarray) -> int:
    """How many of `images` lie in the union of `pools`."""
    return int(len(np.intersect1d(images, np.concatenate(pools))))


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int, what: str) -> np.ndarray:
    if count > len(pool):
        raise MetaShiftError(f"{what}: asks for {count} images but only {len(pool)} are available")
    return np.sort(rng.choice(pool, size=count, replace=False))


# -- (c) sweep -----------------------------------------------------------------


def sweep_mixes(
    graph: MetaGraph, test_context: str, mix_size: int = 2, count: int = 4, max_mixes: int = 2_000_000
) -> list[dict[str, Any]]:
    """`count` training mixes of `mix_size` contexts (never the test context, never an
    isolated subset) whose d to the test subset rises from the smallest to the largest."""
    graph.position(test_context)
    to_test = graph.distances()[graph.position(test_context)]
    usable = [i for i, ctx in enumerate(graph.contexts) if ctx != test_context and not np.isnan(to_test[i])]
    if np.isnan(to_test[graph.position(test_context)]) or len(usable) < mix_size:
        raise MetaShiftError(
            f"{subset_name(graph.cls, test_context)}: need {mix_size} connected subsets "
            f"besides an embedded test subset; {len(usable)} available"
        )
    n_mixes = math.comb(len(usable), mix_size)
    if n_mixes > max_mixes:
        raise MetaShiftError(f"{n_mixes} mixes of {mix_size} out of {len(usable)} subsets; lower mix_size")
    mixes = np.array(list(itertools.combinations(usable, mix_size)), dtype=np.int64)
    d = to_test[mixes].mean(axis=1)
    order = np.argsort(d, kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(count, len(order)))).astype(int))
    return [
        {"train": [graph.contexts[i] for i in mixes[order[p]]], "test": test_context, "d": float(d[order[p]])}
        for p in picks
    ]


# -- shared steps ----------------------------------------------------------------


def distance_report(graph: MetaGraph, train: list[str], test: list[str]) -> dict[str, Any]:
    """Subset names, d of the whole training mix to every test subset, and every pairwise distance."""
    return {
        "train": [subset_name(graph.cls, c) for c in train],
        "test": [subset_name(graph.cls, c) for c in test],
        "d": {subset_name(graph.cls, t): _finite(graph.mix_distance(train, t)) for t in test},
        "pairs": [
            {
                "train": subset_name(graph.cls, a),
                "test": subset_name(graph.cls, t),
                "distance": _finite(graph.distance(a, t)),
            }
            for t in test
            for a in train
        ],
    }


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 6)


def _with_definitions(report: dict[str, Any], catalog: SubsetCatalog) -> dict[str, Any]:
    return {
        **report,
        "thresholds": catalog.thresholds.model_dump(),
        "contexts": list(catalog.kinds),
        "distance": f"Laplacian-eigenmap embedding (dim {EMBED_DIM}) of the per-class meta-graph; "
        "d(mix, T) = mean Euclidean distance of the mix's subsets to T; null where a "
        "subset has no overlap edge",
    }


def _union(catalog: SubsetCatalog, cls: str, contexts: list[str]) -> np.ndarray:
    return np.unique(np.concatenate([catalog.subset(cls, ctx) for ctx in contexts]))


def _in_several_classes(catalog: SubsetCatalog, classes: list[str]) -> np.ndarray:
    counts = np.bincount(
        np.concatenate([catalog.index.images_with(c) for c in classes]),
        minlength=len(catalog.index.image_ids),
    )
    return np.flatnonzero(counts > 1)


def _require_nonempty(sets: dict[str, np.ndarray], split: str) -> None:
    for cls, images in sets.items():
        if len(images) == 0:
            raise MetaShiftError(
                f"class {cls!r} has no {split} images left after removing test images and "
                f"images holding several of the requested classes"
            )


def _assign(
    catalog: SubsetCatalog,
    cls: str,
    label: int,
    split: str,
    images: np.ndarray,
    contexts: list[str],
    group: str | None = None,
) -> list[Assignment]:
    member_of = {ctx: catalog.subset(cls, ctx) for ctx in contexts}
    ids = catalog.index.image_ids
    return [
        Assignment(
            ids[i],
            cls,
            label,
            split,  # type: ignore[arg-type]
            tuple(subset_name(cls, c) for c in contexts if _contains(member_of[c], i)),
            group,
        )
        for i in images.tolist()
    ]


def _contains(sorted_images: np.ndarray, image: int) -> bool:
    pos = np.searchsorted(sorted_images, image)
    return bool(pos < len(sorted_images) and sorted_images[pos] == image)


def _sorted(assignments: list[Assignment]) -> list[Assignment]:
    return sorted(assignments, key=lambda a: (a.split != "train", a.label, a.image_id))
