"""Filters: score samples with models or checks, then keep or reject them by a rule.

`FiltersSpec` is the manifest's `filters:` section; `FilterChain(spec)` runs
it on a batch. Filter modules import torch/transformers only when they score,
so validating a manifest stays cheap.
"""

from __future__ import annotations

from stages.filters.base import Filter, FilterParams, MissingInput, Threshold, class_name_of, shift_name_of
from stages.filters.chain import FilterChain
from stages.filters.release import release_rejections
from stages.filters.rules import Rule, keep_mask, reject_incomplete_trajectories, rejection_reason
from stages.filters.spec import FILTER_CLASSES, FiltersSpec, release_problems

__all__ = ["FILTER_CLASSES", "Filter", "FilterChain", "FilterParams", "FiltersSpec", "MissingInput", "Rule",
           "Threshold", "class_name_of", "keep_mask", "reject_incomplete_trajectories", "rejection_reason",
           "release_problems", "release_rejections", "shift_name_of"]
