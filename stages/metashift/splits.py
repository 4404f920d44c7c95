"""Train/test splits from class(context) subsets, with their meta-graph distances.

(a) `domain_split` — domain generalisation: per class, training contexts and
    test contexts. The test set is built first; images that hold two of the
    requested classes are dropped everywhere (their label is ambiguous); the
    training set is the union of the training subsets minus every test image.
(b) `subpopulation_split` — per class a majority and a minority group of
    contexts (`subpopulation.py`): the official protocol keeps every class at
    `train_per_class` training images, of which `minority_count` come from
    the minority group, and tests on `test_per_group` images per group.

A context may name a community listed in `communities` (as the official
scripts do: `dog(cabinet)` = {floor, clothes, towel, door, rug, cabinet});
its images are then the union of the members. `protocol` chooses how d is
measured (`distances.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stages.metashift.distances import DEFINITIONS, Protocol, community_graph, distance_report
from stages.metashift.scene_graphs import MetaShiftError
from stages.metashift.subsets import SubsetCatalog, subset_name

Contexts = dict[str, Annotated[list[str], Field(min_length=1)]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[str] = Field(min_length=2, description="class names; label = position in this list")
    protocol: Protocol = Field(
        default="official",
        description="official: d on the merged-community meta-graph and the official subpopulation "
        "sampling; subsets: d on the per-subset graph and the plain subpopulation draw",
    )
    communities: dict[str, dict[str, Annotated[list[str], Field(min_length=1)]]] = Field(
        default_factory=dict,
        description="class -> community name -> member contexts; a context naming a community "
        "stands for all its members, and these communities are the nodes d is measured on",
    )

    def contexts(self, cls: str, names: list[str]) -> list[str]:
        """Names with listed communities expanded to their members, in order, without repeats."""
        listed = self.communities.get(cls, {})
        return list(dict.fromkeys(c for n in names for c in listed.get(n, [n])))

    def _check_groups(self, first: str, second: str) -> None:
        """Both context maps name exactly the classes, and no class uses a context in both."""
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes {self.classes} repeat a name")
        if set(self.communities) - set(self.classes):
            raise ValueError(f"communities name classes {sorted(set(self.communities) - set(self.classes))} "
                             f"that are not among {self.classes}")
        for group in (first, second):
            keys = set(getattr(self, group))
            if keys != set(self.classes):
                raise ValueError(
                    f"{group} must give contexts for exactly the classes {self.classes}; got {sorted(keys)}"
                )
        for cls in self.classes:
            shared = set(self.contexts(cls, getattr(self, first)[cls])) & set(
                self.contexts(cls, getattr(self, second)[cls])
            )
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
    test_per_group: int = Field(default=144, ge=1, description="test images per class and group")
    train_per_class: int = Field(
        default=850, ge=1, description="official: training images per class (majority fills up the rest)"
    )
    minority_pool: int = Field(
        default=150, ge=0, description="official: minority images per class set aside for training"
    )
    seed: int = Field(default=42, ge=0, description="seed of the image draws")

    @model_validator(mode="after")
    def _disjoint(self) -> SubpopulationSplit:
        self._check_groups("majority", "minority")
        if self.protocol == "official" and self.minority_count > min(self.minority_pool, self.train_per_class):
            raise ValueError(
                f"minority_count {self.minority_count} exceeds minority_pool {self.minority_pool} "
                f"or train_per_class {self.train_per_class}"
            )
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


# -- (a) domain generalisation ----------------------------------------------


def domain_split(catalog: SubsetCatalog, request: DomainSplit) -> SplitResult:
    train_ctx = {c: request.contexts(c, request.train[c]) for c in request.classes}
    test_ctx = {c: request.contexts(c, request.test[c]) for c in request.classes}
    test_pools = {c: union(catalog, c, test_ctx[c]) for c in request.classes}
    train_pools = {c: union(catalog, c, train_ctx[c]) for c in request.classes}
    ambiguous = in_several_classes(catalog, request.classes)
    test = {c: np.setdiff1d(test_pools[c], ambiguous) for c in request.classes}
    all_test = np.unique(np.concatenate(list(test.values())))
    train = {c: np.setdiff1d(train_pools[c], np.union1d(ambiguous, all_test)) for c in request.classes}
    _require_nonempty(train, "train")
    _require_nonempty(test, "test")

    assignments = []
    for label, cls in enumerate(request.classes):
        assignments += assign(catalog, cls, label, "train", train[cls], train_ctx[cls])
        assignments += assign(catalog, cls, label, "test", test[cls], test_ctx[cls])
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
            **request_distances(catalog, request, cls, request.train[cls], request.test[cls], ambiguous),
        }
    return SplitResult(sorted_assignments(assignments), with_definitions(report, catalog, request))


def request_distances(
    catalog: SubsetCatalog,
    request: DomainSplit | SubpopulationSplit,
    cls: str,
    train: list[str],
    test: list[str],
    ambiguous: np.ndarray,
) -> dict[str, Any]:
    """The distance report of one class under the request's protocol."""
    if request.protocol == "subsets":
        return distance_report(
            catalog.meta_graph(cls), request.contexts(cls, train), request.contexts(cls, test)
        )
    graph = community_graph(catalog, cls, request.classes, request.communities.get(cls), ambiguous)
    return distance_report(graph, train, test)


# -- shared steps ----------------------------------------------------------------


def _overlap(images: np.ndarray, *pools: np.ndarray) -> int:
    """How many of `images` lie in the union of `pools`."""
    return int(len(np.intersect1d(images, np.concatenate(pools))))


def with_definitions(
    report: dict[str, Any], catalog: SubsetCatalog, request: DomainSplit | SubpopulationSplit
) -> dict[str, Any]:
    return {
        **report,
        "protocol": request.protocol,
        "thresholds": catalog.thresholds.model_dump(),
        "contexts": list(catalog.kinds),
        "attribute_vocabulary": catalog.attribute_vocabulary,
        "distance": DEFINITIONS[request.protocol],
    }


def union(catalog: SubsetCatalog, cls: str, contexts: list[str]) -> np.ndarray:
    return np.unique(np.concatenate([catalog.subset(cls, ctx) for ctx in contexts]))


def in_several_classes(catalog: SubsetCatalog, classes: list[str]) -> np.ndarray:
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


def assign(
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


def sorted_assignments(assignments: list[Assignment]) -> list[Assignment]:
    return sorted(assignments, key=lambda a: (a.split != "train", a.label, a.image_id))
