"""The official subpopulation protocol against a port of
`dataset/subpopulation_shift_cat_dog_indoor_outdoor.py` (shuffle_and_truncate with
`random.Random(42)`, then sklearn's `train_test_split(test_size=144, random_state=42)`,
whose ShuffleSplit takes test = permutation[:test], train = permutation[test:] of
`numpy.random.RandomState(42).permutation(n)`), at reduced sizes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stages.metashift.scene_graphs import MetaShiftError, SceneObject, SceneRecord
from stages.metashift.splits import SubpopulationSplit
from stages.metashift.subpopulation import subpopulation_split
from stages.metashift.subsets import ContextIndex, SubsetCatalog, Thresholds

# (count, objects): cat indoors (sofa) is the cat majority, dog outdoors (grass) the dog majority.
BLOCKS = [
    (30, ["cat", "sofa"]),
    (9, ["cat", "grass"]),
    (4, ["cat", "grass", "sofa"]),  # both groups: minority
    (30, ["dog", "grass"]),
    (10, ["dog", "sofa"]),
    (3, ["dog", "cat", "sofa"]),  # both classes: dropped
    (6, ["dog", "bed"]),
    (6, ["cat", "bed"]),
    (6, ["cat", "bowl"]),
    (6, ["dog", "bowl"]),
]
SIZES = {"test_per_group": 4, "minority_pool": 6, "train_per_class": 20}


@pytest.fixture(scope="module")
def catalog() -> SubsetCatalog:
    records = []
    for count, names in BLOCKS:
        for _ in range(count):
            # ids deliberately not in numeric order when sorted as strings
            records.append(SceneRecord(str(7 * len(records) + 5), tuple(SceneObject(n) for n in names)))
    return SubsetCatalog(ContextIndex.from_records(records), Thresholds(min_subset_size=3, min_subsets_per_class=2))


def _request(minority_count: int, **extra) -> SubpopulationSplit:
    return SubpopulationSplit(
        mode="subpopulation",
        classes=["cat", "dog"],
        majority={"cat": ["sofa"], "dog": ["grass"]},
        minority={"cat": ["grass"], "dog": ["sofa"]},
        minority_count=minority_count,
        **{**SIZES, **extra},
    )


def _official(catalog: SubsetCatalog, n_minority: int) -> dict:
    """The official script's lists, per class, at SIZES."""
    ids = catalog.index.image_ids
    images = lambda cls, ctx: {ids[i] for i in catalog.index.context_images(cls, ctx)}  # noqa: E731
    dupes = images("cat", "dog")

    def shuffle_and_truncate(img_id_set, truncate):
        img_id_list = sorted(img_id_set)
        random.Random(42).shuffle(img_id_list)
        return img_id_list[:truncate]

    def train_test_split(items, test_size):
        permutation = np.random.RandomState(42).permutation(len(items))
        return [items[i] for i in permutation[test_size:]], [items[i] for i in permutation[:test_size]]

    out = {}
    for cls, major_ctx, minor_ctx in (("cat", "sofa", "grass"), ("dog", "grass", "sofa")):
        minority = images(cls, minor_ctx) - dupes
        majority = images(cls, major_ctx) - minority - dupes
        minor = shuffle_and_truncate(minority, SIZES["test_per_group"] + SIZES["minority_pool"])
        major = shuffle_and_truncate(majority, SIZES["test_per_group"] + SIZES["train_per_class"])
        minor_train, minor_test = train_test_split(minor, SIZES["test_per_group"])
        major_train, major_test = train_test_split(major, SIZES["test_per_group"])
        out[cls] = {
            "train": set(minor_train[:n_minority] + major_train[n_minority:]),
            "test": set(minor_test + major_test),
            "train_minority": set(minor_train[:n_minority]),
        }
    return out


@pytest.mark.parametrize("n_minority", [0, 3, 6])
def test_official_subpopulation_equals_the_official_script(catalog, n_minority):
    result = subpopulation_split(catalog, _request(n_minority))
    official = _official(catalog, n_minority)
    for cls in ("cat", "dog"):
        got = lambda split, group=None, cls=cls: {  # noqa: E731
            a.image_id for a in result.assignments if a.cls == cls and a.split == split and group in (None, a.group)
        }
        assert got("train") == official[cls]["train"]
        assert got("test") == official[cls]["test"]
        assert got("train", "minority") == official[cls]["train_minority"]
        counts = result.report["classes"][cls]["counts"]
        assert counts == {
            "train": {"majority": 20 - n_minority, "minority": n_minority},
            "test": {"majority": 4, "minority": 4},
        }
    assert result.report["protocol"] == "official"


def test_images_in_both_groups_count_as_minority(catalog):
    result = subpopulation_split(catalog, _request(6))
    ids = catalog.index.image_ids
    both = {ids[i] for i in np.intersect1d(catalog.subset("cat", "grass"), catalog.subset("cat", "sofa"))}
    assert len(both) == 4
    groups = {a.group for a in result.assignments if a.image_id in both}
    assert groups <= {"minority"}
    pool = {a.image_id for a in result.assignments if a.cls == "cat" and a.group == "minority"}
    assert len(pool) == 10  # 13 minority images truncated to test_per_group + minority_pool
    dropped = {ids[i] for i in catalog.index.context_images("dog", "cat")}
    assert not dropped & {a.image_id for a in result.assignments}


def test_official_defaults_and_limits(catalog):
    request = SubpopulationSplit(
        mode="subpopulation",
        classes=["cat", "dog"],
        majority={"cat": ["sofa"], "dog": ["grass"]},
        minority={"cat": ["grass"], "dog": ["sofa"]},
        minority_count=100,
    )
    assert (request.test_per_group, request.minority_pool, request.train_per_class, request.seed) == (
        144,
        150,
        850,
        42,
    )
    with pytest.raises(
        MetaShiftError,
        match=r"cat minority group has 13 images .* needs test_per_group \+ "
        r"minority_pool = 294",
    ):
        subpopulation_split(catalog, request)
    with pytest.raises(ValueError, match="minority_count 7 exceeds minority_pool 6"):
        _request(7)
    with pytest.raises(MetaShiftError, match="cat majority group has 30 images .* = 31"):
        subpopulation_split(catalog, _request(2, train_per_class=27))
