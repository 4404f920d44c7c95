"""Planning: the source index and the stage grids become one WorkUnit per shard.

Nothing here decodes pixels. A unit references a slice of the index rather
than copying keys, and slice digests are computed once and shared by every
variant, so planning a million items × ten variants stays cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.manifest import ManifestError, canonical_json
from pipeline.core.records import WorkUnit
from pipeline.sources import Source, SourceError, SourceItem, open_source
from stages import Stage, get_stage
from stages.base import Variant


@dataclass
class SourceIndex:
    """The source's items as parallel columns (cheaper than a list of objects)."""

    keys: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    refs: list[Any] = field(default_factory=list)
    metas: list[dict[str, Any] | None] = field(default_factory=list)

    @classmethod
    def from_items(cls, items: Iterable[SourceItem]) -> SourceIndex:
        index = cls()
        seen: set[str] = set()
        for item in items:
            if item.key in seen:
                raise ManifestError(f"source yields the key {item.key!r} twice; keys must be unique")
            seen.add(item.key)
            index.keys.append(item.key)
            index.sha256.append(item.sha256)
            index.labels.append(item.label)
            index.refs.append(item.ref)
            index.metas.append(item.meta)
        return index

    def __len__(self) -> int:
        return len(self.keys)

    def item(self, i: int) -> SourceItem:
        return SourceItem(self.keys[i], self.sha256[i], self.labels[i], self.refs[i], self.metas[i])

    def items(self, start: int, stop: int) -> list[SourceItem]:
        return [self.item(i) for i in range(start, stop)]

    def slice_digest(self, start: int, stop: int) -> str:
        h = hashlib.sha256()
        for i in range(start, stop):
            row = f"{self.keys[i]}\x1f{self.sha256[i]}\x1f{self.labels[i]!r}"
            if self.metas[i] is not None:     # index-time tags reach the samples' bytes
                row += f"\x1f{canonical_json(self.metas[i])}"
            h.update(f"{row}\n".encode())
        return h.hexdigest()

    def digest(self) -> str:
        return self.slice_digest(0, len(self))


@dataclass
class Plan:
    units: list[WorkUnit]
    stages: list[Stage]
    variants: list[tuple[int, Variant]]     # (stage index, variant) in manifest order
    index: SourceIndex
    source: Source

    outputs: dict[str, int]                 # config -> samples emitted per source item (e.g. scales)

    def outputs_per_input(self, config: str) -> int:
        return self.outputs[config]


def build_stages(release: Any) -> list[Stage]:
    return [get_stage(spec.stage)(spec) for spec in release.shifts]


def _check_unique_configs(variants: list[tuple[int, Variant]]) -> None:
    seen: dict[str, int] = {}
    for stage_index, variant in variants:
        if variant.config in seen:
            raise ManifestError(
                f"shifts.{stage_index} produces config {variant.config!r}, already produced by "
                f"shifts.{seen[variant.config]}; give the entries different parameters or a `name`")
        seen[variant.config] = stage_index


def _work_fingerprint(stage_index: int, stage: Stage) -> dict:
    """A stage's fingerprint; a model or adapter file that cannot be found is bad input."""
    try:
        return stage.work_fingerprint()
    except (ValueError, FileNotFoundError) as exc:
        raise ManifestError(f"shifts.{stage_index} ({stage.name}): {exc}") from None


def _check_against_source(stages: list[Stage], source: Source) -> None:
    """Each stage's own checks against the source (e.g. models vs class names): bad input, exit 2.
    The source is described only when some stage checks it."""
    checking = [(i, stage) for i, stage in enumerate(stages)
                if type(stage).check_source is not Stage.check_source]
    if not checking:
        return
    try:
        description = source.describe()
    except SourceError as exc:
        raise ManifestError(f"source: {exc}") from None
    for stage_index, stage in checking:
        try:
            stage.check_source(description)
        except (ValueError, FileNotFoundError) as exc:
            raise ManifestError(f"shifts.{stage_index} ({stage.name}): {exc}") from None


def unit_fingerprint(common: str, stage_fp: str, variant: Variant, slice_digest: str) -> str:
    return hashlib.sha256(f"{common}|{stage_fp}|{variant.token()}|{slice_digest}".encode()).hexdigest()


def plan_release(release: Any, index: SourceIndex | None = None, source: Source | None = None,
                 filters_fingerprint: Any = None) -> Plan:
    """One WorkUnit per (variant, slice of samples_per_shard source items)."""
    source = source or open_source(release.source)
    stages = build_stages(release)
    variants = [(si, v) for si, stage in enumerate(stages) for v in stage.variants()]
    _check_unique_configs(variants)
    _check_against_source(stages, source)   # before indexing: a bad model fails fast
    if index is None:
        try:
            index = SourceIndex.from_items(source.index())
        except SourceError as exc:   # e.g. a missing folder or shard: bad input, before any work
            raise ManifestError(f"source: {exc}") from None

    out = release.output
    # everything besides the stage and the source slice that reaches a shard's bytes: the release
    # name and version stand in every sample's provenance; JPEG quality only matters for JPEG
    common = canonical_json({"seed": release.seed, "name": release.name, "version": release.version,
                             "encoding": out.encoding,
                             "quality": out.jpeg_quality if out.encoding == "jpg" else None,
                             "formats": sorted(out.formats), "image_size": out.image_size,
                             "filters": filters_fingerprint,
                             # which oversized source images are refused or downscaled changes the output
                             "decode": {k: getattr(release.source, k, None) for k in ("max_pixels", "oversize")}})
    stage_fps = [hashlib.sha256(canonical_json(_work_fingerprint(i, s)).encode()).hexdigest()
                 for i, s in enumerate(stages)]
    per_shard = out.samples_per_shard
    slices = [(start, min(start + per_shard, len(index))) for start in range(0, len(index), per_shard)]
    digests = [index.slice_digest(a, b) for a, b in slices]

    units: list[WorkUnit] = []
    for stage_index, variant in variants:
        for unit_index, ((start, stop), digest) in enumerate(zip(slices, digests)):
            units.append(WorkUnit(
                shard_id=f"{variant.config}/test-{unit_index:05d}", variant=variant, stage_index=stage_index,
                unit_index=unit_index, start=start, stop=stop,
                fingerprint=unit_fingerprint(common, stage_fps[stage_index], variant, digest),
                affinity=f"{stage_index}:{start}" if stages[stage_index].shares_work_across_variants else None))
    outputs = {v.config: stages[i].outputs_per_input(v) for i, v in variants}
    return Plan(units=units, stages=stages, variants=variants, index=index, source=source, outputs=outputs)
