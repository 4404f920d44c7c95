"""The contract every filter implements, and the loop the base class owns.

A filter scores samples; it never decides. A subclass fills in only
`score(batch) -> {score name: [value per sample]}`; `Filter.run` owns the
rest: which samples get scored (status "ok" with what the filter needs),
batching, timing, stats, and turning an exception into `status=error` rows.
The rule that turns scores into keep/reject lives in `rules.py`.

Naming convention (what a filter reads from a sample), resolved once by the
base class and written into `batch.shift[i]` of the batch a subclass scores:

- `class_name`: `shift["class_name"]`, else `meta["class_name"]`, else the
  label when it is a string, else `meta["class_names"][label]` for an integer
  label (list or mapping);
- `shift_name`: `shift["shift_name"]`, else a string `shift["shift"]`, else
  the variant's params `shift_name` / `shift`, else `meta["shift_name"]`;
- trajectory: `shift["trajectory"]` groups the samples of one trajectory and
  `shift["scale"]` orders them; the reference is the scale-0 sample of the
  same trajectory, which must be in the same batch (a generative stage emits
  a whole trajectory in one batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from stages.base import Batch, Variant

NEEDS = ("image", "class_name", "shift_name", "reference")


class FilterParams(BaseModel):
    """Base of every filter's params model (one entry of `filters.chain`).

    Subclasses add `filter: Literal["<name>"]`; unknown fields are rejected.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(default=16, ge=1, le=4096, description="samples per model call")


class Threshold(BaseModel):
    """Pass when `min <= value <= max` (either bound may be absent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float | None = None
    max: float | None = None

    def failure(self, name: str, value: float) -> str | None:
        """Why `value` fails, e.g. 'clip_class 21.3 < 28.739'; None when it passes."""
        if value != value:  # NaN never passes
            return f"{name} nan"
        if self.min is not None and value < self.min:
            return f"{name} {short(value, lambda v: v < self.min)} < {self.min:.5g}"
        if self.max is not None and value > self.max:
            return f"{name} {short(value, lambda v: v > self.max)} > {self.max:.5g}"
        return None


def short(value: float, fails: Any) -> str:
    """`value` with 4 significant digits, or as many more as it takes for the
    printed number itself to fail (0.99999 against a minimum of 1 is not '1')."""
    for digits in range(4, 18):
        text = f"{value:.{digits}g}"
        if fails(float(text)):
            return text
    return repr(value)


@dataclass
class FilterStats:
    """Per-process counters of one filter; merge by addition."""

    samples: int = 0
    errors: int = 0
    batches: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"samples": self.samples, "errors": self.errors, "batches": self.batches,
                "seconds": round(self.seconds, 4)}


class MissingInput(Exception):
    """A sample lacks something the filter needs (becomes an error row)."""


def class_name_of(batch: Batch, i: int) -> str:
    shift, meta, label = batch.shift[i], batch.meta[i] or {}, batch.labels[i]
    for value in (shift.get("class_name"), meta.get("class_name"), label if isinstance(label, str) else None):
        if isinstance(value, str) and value:
            return value
    names = meta.get("class_names")
    if isinstance(label, int) and not isinstance(label, bool) and names is not None:
        try:
            return str(names[label] if isinstance(names, list) else names.get(label, names.get(str(label))))
        except (IndexError, KeyError, TypeError, AttributeError):
            pass
    raise MissingInput(f"no class name (expected shift['class_name'], meta['class_name'], a string label "
                       f"or meta['class_names'][label]; label is {label!r})")


def shift_name_of(batch: Batch, i: int, variant: Variant | None) -> str:
    shift, meta = batch.shift[i], batch.meta[i] or {}
    params = variant.params if variant is not None else {}
    for value in (shift.get("shift_name"), shift.get("shift"), params.get("shift_name"),
                  params.get("shift"), meta.get("shift_name")):
        if isinstance(value, str) and value:
            return value
    raise MissingInput("no shift name (expected shift['shift_name'], shift['shift'] or the variant's "
                       "'shift_name'/'shift' param)")


def reference_indices(batch: Batch) -> dict[Any, int]:
    """trajectory id -> index of its scale-0 sample, among samples that are ok and have pixels."""
    refs: dict[Any, int] = {}
    for i, shift in enumerate(batch.shift):
        trajectory, scale = shift.get("trajectory"), shift.get("scale")
        if trajectory is None or scale is None or batch.status[i] != "ok" or batch.images[i] is None:
            continue
        if float(scale) == 0.0:
            refs.setdefault(trajectory, i)
    return refs


class Filter:
    """Base class of a filter. Subclasses set `name`, `version`, `Params`,
    `scores` (the names `score` returns), `needs` (subset of NEEDS) and
    implement `score`; model-backed filters also override `weight_hashes`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[FilterParams]]
    scores: ClassVar[tuple[str, ...]]
    needs: ClassVar[frozenset[str]] = frozenset({"image"})

    def __init__(self, params: FilterParams):
        self.params = params
        self.stats = FilterStats()

    def score(self, batch: Batch) -> dict[str, list[float]]:
        raise NotImplementedError

    def prepare(self, references: Batch) -> None:
        """Called once per `run` with one scale-0 sample per trajectory (filters that need a reference)."""

    def default_thresholds(self) -> dict[str, Threshold]:
        """Thresholds that come with the filter's params (manifest thresholds override them)."""
        return {}

    def weight_hashes(self) -> dict[str, str]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "params": self.params.model_dump(mode="json"), "weights": self.weight_hashes()}

    def run(self, batch: Batch, variant: Variant | None = None) -> None:
        """Score every ok sample of `batch` in place: scores into `batch.scores`,
        samples that lack an input or hit a model error become `status=error`."""
        started = time.perf_counter()
        eligible = self._eligible(batch, variant)
        if eligible and "reference" in self.needs:
            eligible = self._prepare_references(batch, eligible)
        size = self.params.batch_size
        for start in range(0, len(eligible), size):
            self._score_chunk(batch, eligible[start:start + size])
        self.stats.seconds += time.perf_counter() - started

    def _eligible(self, batch: Batch, variant: Variant | None) -> list[tuple[int, dict[str, Any]]]:
        """(index, resolved names) of the ok samples that have what this filter needs."""
        refs = reference_indices(batch) if "reference" in self.needs else {}
        eligible = []
        for i in batch.ok_indices():
            try:
                eligible.append((i, self._inputs(batch, i, variant, refs)))
            except MissingInput as exc:
                self._error(batch, i, str(exc))
        return eligible

    def _inputs(self, batch: Batch, i: int, variant: Variant | None, refs: dict[Any, int]) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        if batch.images[i] is None and "image" in self.needs:
            raise MissingInput("no image to score")
        if "class_name" in self.needs:
            resolved["class_name"] = class_name_of(batch, i)
        if "shift_name" in self.needs:
            resolved["shift_name"] = shift_name_of(batch, i, variant)
        if "reference" in self.needs:
            trajectory = batch.shift[i].get("trajectory")
            if trajectory is None or trajectory not in refs:
                raise MissingInput(f"no scale-0 reference for trajectory {trajectory!r} in this batch "
                                   "(expected shift['trajectory'] and shift['scale'] == 0 on one sample)")
            resolved["reference"] = refs[trajectory]
        return resolved

    def _prepare_references(self, batch: Batch, eligible: list) -> list:
        ref_indices = sorted({inputs["reference"] for _, inputs in eligible})
        try:
            self.prepare(batch.select(ref_indices))
        except Exception as exc:  # noqa: BLE001 - a model failure is data
            for i, _ in eligible:
                self._error(batch, i, f"reference: {type(exc).__name__}: {exc}")
            return []
        return eligible

    def _score_chunk(self, batch: Batch, chunk: list[tuple[int, dict[str, Any]]]) -> None:
        indices = [i for i, _ in chunk]
        sub = batch.select(indices)
        sub.shift = [{**shift, **inputs} for shift, (_, inputs) in zip(sub.shift, chunk)]
        try:
            values = self.score(sub)
            self._check_scores(values, len(indices))
        except Exception as exc:  # noqa: BLE001 - a model failure is data
            for i in indices:
                self._error(batch, i, f"{type(exc).__name__}: {exc}")
            return
        for name, column in values.items():
            for i, value in zip(indices, column):
                batch.scores[i] = {**batch.scores[i], name: float(value)}
        self.stats.samples += len(indices)
        self.stats.batches += 1

    def _check_scores(self, values: dict[str, list[float]], n: int) -> None:
        if set(values) != set(self.scores):
            raise ValueError(f"{self.name} returned scores {sorted(values)}, expected {sorted(self.scores)}")
        for name, column in values.items():
            if len(column) != n:
                raise ValueError(f"{self.name} returned {len(column)} values of {name}, expected {n}")

    def _error(self, batch: Batch, i: int, reason: str) -> None:
        batch.fail(i, f"{self.name}: {reason}"[:500])
        self.stats.errors += 1
