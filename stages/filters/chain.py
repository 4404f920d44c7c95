"""`FilterChain`: the filters of a manifest, run in order on a batch, then the rule.

Called by the engine after the stage, in the same task. It never drops a row:
scores go into `batch.scores`, failing samples become `status="rejected"`
with the reason (e.g. "clip_class 21.3 < 28.739; dino_ref 0.52 < 0.7812"),
samples a filter could not score become `status="error"`. Rejected samples
keep their pixels, so a caller may save thumbnails of them. A filter with a
`record_hashes(batch)` method (dedup) also leaves what the release-wide pass
needs in `batch.meta`.
"""

from __future__ import annotations

from typing import Any

from stages.base import Batch, Variant
from stages.filters.base import Filter, Threshold
from stages.filters.rules import apply_rule, reject_incomplete_trajectories
from stages.filters.spec import FILTER_CLASSES, FiltersSpec


class FilterChain:
    def __init__(self, spec: FiltersSpec):
        self.spec = spec
        self.filters: list[Filter] = [FILTER_CLASSES[entry.filter](entry) for entry in spec.chain]
        self.thresholds: dict[str, Threshold] = {}
        for f in self.filters:
            self.thresholds.update(f.default_thresholds())
        self.thresholds.update(spec.thresholds)
        self.rejected = {"rule": 0, "complete_trajectory": 0}

    def __call__(self, batch: Batch, variant: Variant | None = None) -> Batch:
        for f in self.filters:
            f.run(batch, variant)
            record_hashes = getattr(f, "record_hashes", None)
            if record_hashes is not None:
                record_hashes(batch)
        self.rejected["rule"] += apply_rule(batch, self.thresholds, self.spec.rule)
        if self.spec.complete_trajectory:
            self.rejected["complete_trajectory"] += reject_incomplete_trajectories(batch)
        return batch

    def fingerprint(self) -> dict[str, Any]:
        """What decides the outcome: filter versions, params, weight sha256s, thresholds and rule."""
        return {
            "filters": [f.fingerprint() for f in self.filters],
            "thresholds": {name: t.model_dump() for name, t in sorted(self.thresholds.items())},
            "rule": self.spec.rule.model_dump(),
            "complete_trajectory": self.spec.complete_trajectory,
        }

    def stats(self) -> dict[str, Any]:
        """Per-filter counters and rejections of this process; merge by addition."""
        return {"filters": {f.name: f.stats.as_dict() for f in self.filters}, "rejected": dict(self.rejected)}
