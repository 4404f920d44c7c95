"""From scores to keep/reject: thresholds, k-of-n voting, complete trajectories.

Every thresholded score is either *required* (must pass) or *voting* (the
scores listed in a `k_of_n` rule, of which at least k must pass; CNS-Bench
keeps an image when 2 of its 4 model scores pass). Scores without a threshold
are recorded only. `complete_trajectory` then rejects every scale of a
trajectory in which any scale did not survive.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stages.base import Batch
from stages.filters.base import Threshold


class Rule(BaseModel):
    """`all`: every thresholded score must pass; `k_of_n`: at least `k` of the
    scores in `of` must pass (and every other thresholded score)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["all", "k_of_n"] = "all"
    k: int = Field(default=1, ge=1)
    of: list[str] = Field(default=[], description="the voting scores of a k_of_n rule")

    @model_validator(mode="after")
    def _k_fits(self) -> Rule:
        if self.kind == "k_of_n" and not self.k <= len(self.of):
            raise ValueError(f"k_of_n needs k <= len(of); got k={self.k} with {len(self.of)} scores in `of`")
        if self.kind == "all" and self.of:
            raise ValueError("`of` only applies to kind: k_of_n")
        return self

    def voting(self) -> list[str]:
        return list(self.of) if self.kind == "k_of_n" else []


def rejection_reason(scores: dict[str, float], thresholds: dict[str, Threshold], rule: Rule) -> str | None:
    """Why a sample with these scores is rejected; None when it is kept."""
    voting = rule.voting()
    fails = {name: t.failure(name, scores.get(name, math.nan)) for name, t in thresholds.items()}
    reasons = [fails[name] for name in thresholds if name not in voting and fails[name]]
    if voting:
        passed = sum(fails[name] is None for name in voting)
        if passed < rule.k:
            failed = "; ".join(fails[name] for name in voting if fails[name])
            reasons.append(f"{failed} ({passed} of {len(voting)} passed, need {rule.k})")
    return "; ".join(reasons) or None


def keep_mask(columns: dict[str, np.ndarray], thresholds: dict[str, Threshold], rule: Rule) -> np.ndarray:
    """Vectorised `rejection_reason(...) is None` over a table of score columns."""
    n = len(next(iter(columns.values()))) if columns else 0
    passes = {name: _passes(columns.get(name, np.full(n, np.nan)), t) for name, t in thresholds.items()}
    keep = np.ones(n, dtype=bool)
    voting = rule.voting()
    for name, ok in passes.items():
        if name not in voting:
            keep &= ok
    if voting:
        keep &= np.sum([passes[name] for name in voting], axis=0) >= rule.k
    return keep


def _passes(values: np.ndarray, threshold: Threshold) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    if threshold.min is not None:
        ok &= values >= threshold.min
    if threshold.max is not None:
        ok &= values <= threshold.max
    return ok


def apply_rule(batch: Batch, thresholds: dict[str, Threshold], rule: Rule) -> int:
    """Mark ok samples that fail the rule `rejected` with the reason; returns how many."""
    rejected = 0
    for i in batch.ok_indices():
        reason = rejection_reason(batch.scores[i], thresholds, rule)
        if reason:
            batch.status[i], batch.reason[i] = "rejected", reason
            rejected += 1
    return rejected


def reject_incomplete_trajectories(batch: Batch) -> int:
    """Reject the surviving scales of every trajectory that lost a scale; returns how many.

    Sees this batch only; `stages.filters.release` applies the same rule across the release."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, shift in enumerate(batch.shift):
        if shift.get("trajectory") is not None:
            members[str(shift["trajectory"])].append(i)
    rejected = 0
    for trajectory, indices in members.items():
        lost = [f"scale {batch.shift[i].get('scale')} {batch.status[i]}"
                for i in indices if batch.status[i] != "ok"]
        if not lost:
            continue
        for i in indices:
            if batch.status[i] == "ok":
                batch.status[i] = "rejected"
                batch.reason[i] = f"incomplete trajectory {trajectory}: {', '.join(lost)}"[:500]
                rejected += 1
    return rejected
