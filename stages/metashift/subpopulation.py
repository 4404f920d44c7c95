"""Subpopulation shift: per class a majority and a minority group of contexts.

Official protocol (`subpopulation_shift_cat_dog_indoor_outdoor.py`), per class:
1. minority = the minority group's images; majority = the majority group's
   images not in the minority group (the script builds the minority set first
   and excludes it, so an image in both groups counts as minority); images
   holding several requested classes leave both.
2. Each group's image ids are sorted, shuffled with `random.Random(seed)`
   (a fresh generator per group) and truncated: the minority to
   `test_per_group + minority_pool` (144 + 150 = 294), the majority to
   `test_per_group + train_per_class` (144 + 850 = 994).
3. Each truncated list is split like `sklearn.model_selection.train_test_split
   (test_size=test_per_group, random_state=seed)`: with the permutation
   p = `numpy.random.RandomState(seed).permutation(n)`, test = items p[:test],
   train = items p[test:], in that order.
4. training = minority_train[:minority_count] + majority_train[minority_count:],
   so every class has exactly `train_per_class` training images whatever the
   minority count; test = both groups' test items.
A group with fewer images than its truncation length is an error (the script
pairs the classes' lists in one `train_test_split` call, which needs equal lengths).

`subsets` protocol: every majority image not drawn for the test set is kept,
plus `minority_count` minority images drawn with `numpy.random.default_rng(seed)`;
images in both groups are dropped.
"""

from __future__ import annotations

import random

import numpy as np

from stages.metashift.scene_graphs import MetaShiftError
from stages.metashift.splits import (
    DomainSplit,
    SplitResult,
    SubpopulationSplit,
    assign,
    domain_split,
    in_several_classes,
    request_distances,
    sorted_assignments,
    union,
    with_definitions,
)
from stages.metashift.subsets import SubsetCatalog

Groups = dict[str, dict[str, np.ndarray]]  # split -> group -> image positions


def subpopulation_split(catalog: SubsetCatalog, request: SubpopulationSplit) -> SplitResult:
    ambiguous = in_several_classes(catalog, request.classes)
    draw = _official_groups if request.protocol == "official" else _plain_groups
    rng = np.random.default_rng(request.seed)
    assignments, report = [], {"mode": "subpopulation", "seed": request.seed, "classes": {}}
    for label, cls in enumerate(request.classes):
        contexts = {g: request.contexts(cls, getattr(request, g)[cls]) for g in ("majority", "minority")}
        majority, minority = union(catalog, cls, contexts["majority"]), union(catalog, cls, contexts["minority"])
        groups, dropped = draw(catalog, request, cls, majority, minority, ambiguous, rng)
        for split, by_group in groups.items():
            for group, images in by_group.items():
                assignments += assign(catalog, cls, label, split, np.sort(images), contexts[group], group)
        report["classes"][cls] = {
            "counts": {s: {g: int(len(im)) for g, im in by.items()} for s, by in groups.items()},
            "dropped_in_both_groups_or_classes": dropped,
            **request_distances(catalog, request, cls, request.majority[cls], request.minority[cls], ambiguous),
        }
    return SplitResult(sorted_assignments(assignments), with_definitions(report, catalog, request))


def _official_groups(catalog, request, cls, majority, minority, ambiguous, rng) -> tuple[Groups, int]:
    dropped = int(len(np.intersect1d(ambiguous, np.union1d(majority, minority))))
    minority = np.setdiff1d(minority, ambiguous)
    majority = np.setdiff1d(majority, np.union1d(ambiguous, minority))
    ids, n_test = catalog.index.image_ids, request.test_per_group
    minor = shuffle_and_truncate(ids, minority, n_test + request.minority_pool, request.seed)
    major = shuffle_and_truncate(ids, majority, n_test + request.train_per_class, request.seed)
    for group, items, need in (
        ("minority", minor, "test_per_group + minority_pool"),
        ("majority", major, "test_per_group + train_per_class"),
    ):
        wanted = n_test + (request.minority_pool if group == "minority" else request.train_per_class)
        if len(items) < wanted:
            raise MetaShiftError(
                f"{cls} {group} group has {len(items)} images (after removing images of several "
                f"classes{' and minority images' if group == 'majority' else ''}); the official protocol "
                f"needs {need} = {wanted}"
            )
    minor_test, minor_train = train_test_split(minor, n_test, request.seed)
    major_test, major_train = train_test_split(major, n_test, request.seed)
    k = request.minority_count
    groups = {
        "train": {"majority": np.array(major_train[k:], np.int64), "minority": np.array(minor_train[:k], np.int64)},
        "test": {"majority": np.array(major_test, np.int64), "minority": np.array(minor_test, np.int64)},
    }
    return groups, dropped


def shuffle_and_truncate(ids: list[str], images: np.ndarray, length: int, seed: int) -> list[int]:
    """Image positions ordered by image id, shuffled by `random.Random(seed)`, first `length`."""
    order = sorted(images.tolist(), key=ids.__getitem__)
    random.Random(seed).shuffle(order)
    return order[:length]


def train_test_split(items: list[int], n_test: int, seed: int) -> tuple[list[int], list[int]]:
    """(test, train) as sklearn's train_test_split(test_size=n_test, random_state=seed) orders them."""
    permutation = np.random.RandomState(seed).permutation(len(items))
    return [items[i] for i in permutation[:n_test]], [items[i] for i in permutation[n_test:]]


def _plain_groups(catalog, request, cls, majority, minority, ambiguous, rng) -> tuple[Groups, int]:
    both = np.union1d(ambiguous, np.intersect1d(majority, minority))
    dropped = int(len(np.intersect1d(both, np.union1d(majority, minority))))
    majority, minority = np.setdiff1d(majority, both), np.setdiff1d(minority, both)
    test_major = _draw(rng, majority, request.test_per_group, f"{cls} majority test (test_per_group)")
    test_minor = _draw(rng, minority, request.test_per_group, f"{cls} minority test (test_per_group)")
    train_minor = _draw(
        rng,
        np.setdiff1d(minority, test_minor),
        request.minority_count,
        f"{cls} minority train (minority_count)",
    )
    groups = {
        "train": {"majority": np.setdiff1d(majority, test_major), "minority": train_minor},
        "test": {"majority": test_major, "minority": test_minor},
    }
    return groups, dropped


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int, what: str) -> np.ndarray:
    if count > len(pool):
        raise MetaShiftError(f"{what}: asks for {count} images but only {len(pool)} are available")
    return np.sort(rng.choice(pool, size=count, replace=False))


def make_split(catalog: SubsetCatalog, request: DomainSplit | SubpopulationSplit) -> SplitResult:
    """The train/test assignment a split request asks for (domain or subpopulation)."""
    if isinstance(request, DomainSplit):
        return domain_split(catalog, request)
    return subpopulation_split(catalog, request)
