"""Filter rules on exact cases: every required score counts, votes add to them, counts and
reasons are exact, and the vectorised mask agrees with the per-sample reasons."""

from __future__ import annotations

import numpy as np

from stages.base import Batch
from stages.filters.base import Threshold
from stages.filters.rules import Rule, apply_rule, keep_mask, reject_incomplete_trajectories, rejection_reason

REQUIRED = {"a": Threshold(min=1.0), "b": Threshold(max=5.0)}


def test_every_required_threshold_must_pass_not_only_the_last():
    columns = {"a": np.array([0.0, 2.0, 2.0]), "b": np.array([1.0, 9.0, 1.0])}
    assert keep_mask(columns, REQUIRED, Rule()).tolist() == [False, False, True]
    reasons = [rejection_reason({k: float(v[i]) for k, v in columns.items()}, REQUIRED, Rule()) for i in range(3)]
    assert reasons == ["a 0 < 1", "b 9 > 5", None]


def test_votes_do_not_override_a_failing_required_score():
    thresholds = {**REQUIRED, "v1": Threshold(min=0.5), "v2": Threshold(min=0.5)}
    rule = Rule(kind="k_of_n", k=1, of=["v1", "v2"])
    columns = {"a": np.array([0.0, 2.0]), "b": np.array([1.0, 1.0]), "v1": np.array([0.9, 0.9]),
               "v2": np.array([0.0, 0.0])}
    assert keep_mask(columns, thresholds, rule).tolist() == [False, True]


def test_missing_and_none_scores_never_pass():
    columns = {"a": np.array([2.0, None, 3.0], dtype=object)}     # a score that was never computed
    assert keep_mask(columns, {"a": Threshold(min=1.0)}, Rule()).tolist() == [True, False, True]
    assert keep_mask({"x": np.array([1.0, 2.0])}, {"a": Threshold(min=1.0)}, Rule()).tolist() == [False, False]
    assert rejection_reason({}, {"a": Threshold(min=1.0)}, Rule()) == "a nan"


def test_an_empty_table_keeps_nothing_and_fails_nothing():
    assert keep_mask({}, {}, Rule()).tolist() == []
    assert keep_mask({}, {"a": Threshold(min=1.0)}, Rule()).shape == (0,)


def _batch(scores: list[dict], shifts: list[dict] | None = None) -> Batch:
    n = len(scores)
    return Batch(keys=[f"k{i}" for i in range(n)], images=[None] * n, seeds=list(range(n)),
                 scores=[dict(s) for s in scores], shift=shifts or [{} for _ in range(n)])


def test_apply_rule_counts_and_marks_each_rejection():
    batch = _batch([{"a": 0.0, "b": 1.0}, {"a": 2.0, "b": 1.0}, {"a": 2.0, "b": 7.0}, {"a": 0.0, "b": 9.0}])
    batch.status[3], batch.reason[3] = "error", "decode failed"          # not ok: left alone
    assert apply_rule(batch, REQUIRED, Rule()) == 2
    assert batch.status == ["rejected", "ok", "rejected", "error"]
    assert batch.reason == ["a 0 < 1", "", "b 7 > 5", "decode failed"]


def test_an_incomplete_trajectory_loses_every_scale_with_the_exact_reason():
    shifts = [{"trajectory": "t1", "scale": s} for s in (0.0, 1.0, 2.0)] + [{"trajectory": "t2", "scale": 0.0}]
    batch = _batch([{}] * 4, shifts)
    batch.status[1], batch.status[2] = "rejected", "error"
    assert reject_incomplete_trajectories(batch) == 1
    assert batch.status == ["rejected", "rejected", "error", "ok"]
    assert batch.reason[0] == "incomplete trajectory t1: scale 1.0 rejected, scale 2.0 error"


def test_an_incomplete_trajectory_reason_is_cut_at_500_characters():
    shifts = [{"trajectory": "t", "scale": float(s)} for s in range(80)]
    batch = _batch([{}] * 80, shifts)
    for i in range(1, 80):
        batch.status[i] = "rejected"
    reject_incomplete_trajectories(batch)
    assert len(batch.reason[0]) == 500 and batch.reason[0].startswith("incomplete trajectory t: scale 1.0 rejected")
