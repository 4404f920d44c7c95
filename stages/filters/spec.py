"""The manifest's `filters:` section.

```yaml
filters:
  include: thresholds.yaml        # optional: thresholds + rule from `shiftforge calibrate`
  chain:
    - {filter: clip_class, model: models/clip}
    - {filter: clip_class_shift, model: models/clip}
    - {filter: clip_ref, model: models/clip}
    - {filter: dino_ref, model: models/dinov2}
    - {filter: quality}
  thresholds: {clip_class: 28.739, clip_class_shift: 35.293, clip_ref: 0.8059, dino_ref: 0.7812}
  rule: {kind: k_of_n, k: 2, of: [clip_class, clip_class_shift, clip_ref, dino_ref]}
  complete_trajectory: true
```

A threshold is a number (the minimum a score must reach) or `{min, max}`.
Thresholds in the manifest override those of an included file; an included
file's path is relative to the manifest's folder. The included values are
resolved at validation, so the release's resolved manifest records them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from stages.base import ManifestPath, resolve_manifest_path
from stages.filters.base import Filter, Threshold
from stages.filters.clip import FILTERS as CLIP_FILTERS
from stages.filters.dedup import FILTERS as DEDUP_FILTERS
from stages.filters.dino import FILTERS as DINO_FILTERS
from stages.filters.label import FILTERS as LABEL_FILTERS
from stages.filters.quality import FILTERS as QUALITY_FILTERS
from stages.filters.rules import Rule

FILTER_CLASSES: dict[str, type[Filter]] = {
    cls.name: cls for cls in [*CLIP_FILTERS, *DINO_FILTERS, *LABEL_FILTERS, *DEDUP_FILTERS, *QUALITY_FILTERS]
}
FilterEntry = Annotated[Union[tuple(cls.Params for cls in FILTER_CLASSES.values())],  # noqa: UP007
                        Field(discriminator="filter")]
INCLUDE_KEYS = {"thresholds", "rule", "calibration"}


def read_include(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read included thresholds file {path!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"included thresholds file {path!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not set(data) <= INCLUDE_KEYS:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"included file {path!r} may hold only {sorted(INCLUDE_KEYS)}; got {keys}")
    return data


class FiltersSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    include: ManifestPath | None = Field(default=None, description="YAML file with `thresholds` (and `rule`)")
    chain: list[FilterEntry] = Field(min_length=1, description="filters, run in this order")
    thresholds: dict[str, Threshold] = Field(default={}, description="score name -> min (or {min, max})")
    rule: Rule = Rule()
    complete_trajectory: bool = Field(default=False, description="reject a trajectory missing any scale")

    @model_validator(mode="before")
    @classmethod
    def _merge_include(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not data.get("include"):
            return data
        included = read_include(resolve_manifest_path(data["include"], info))
        merged = dict(data)
        merged["thresholds"] = {**(included.get("thresholds") or {}), **(data.get("thresholds") or {})}
        if "rule" not in data and "rule" in included:
            merged["rule"] = included["rule"]
        return merged

    @field_validator("thresholds", mode="before")
    @classmethod
    def _numbers_are_minimums(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {name: {"min": t} if isinstance(t, (int, float)) and not isinstance(t, bool) else t
                for name, t in value.items()}

    @model_validator(mode="after")
    def _names_known(self) -> FiltersSpec:
        names = [entry.filter for entry in self.chain]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"filter(s) listed twice in chain: {repeated}")
        produced = self.score_names()
        for where, used in (("thresholds", list(self.thresholds)), ("rule.of", self.rule.of)):
            unknown = sorted(set(used) - set(produced))
            if unknown:
                raise ValueError(f"{where} names score(s) {unknown} that no filter in chain produces; "
                                 f"chain produces {produced}")
        return self

    def score_names(self) -> list[str]:
        return [score for entry in self.chain for score in FILTER_CLASSES[entry.filter].scores]

    def needs(self) -> set[str]:
        """What the chain needs from samples: image, class_name, shift_name, reference."""
        return set().union(*(FILTER_CLASSES[entry.filter].needs for entry in self.chain))


def release_problems(release: Any, source: type) -> list[str]:
    """Problems between a release's filters, its shifts and its source class that one section
    alone cannot see.

    Reference filters and `complete_trajectory` compare the scales of a trajectory, so some shift
    must emit several samples per input (`Stage.outputs_per_input` > 1)."""
    spec = getattr(release, "filters", None)
    if spec is None:
        return []
    return _class_name_problems(release, spec, source) + _trajectory_problems(release, spec)


def _class_name_problems(release: Any, spec: FiltersSpec, source: type) -> list[str]:
    """A filter that prompts with the class name on a source that never has one."""
    if "class_name" not in spec.needs():
        return []
    from stages import get_stage

    if source.provides_class_names is not False:
        return []
    if any(getattr(get_stage(p.stage), "provides_class_names", False) for p in release.shifts):
        return []
    users = [e.filter for e in spec.chain if "class_name" in FILTER_CLASSES[e.filter].needs]
    return [f"filters: {', '.join(users)} need a class name per sample, but source kind "
            f"{release.source.kind!r} has none (use a labelled source such as folder or prompts)"]


def _trajectory_problems(release: Any, spec: FiltersSpec) -> list[str]:
    if not ("reference" in spec.needs() or spec.complete_trajectory):
        return []
    from stages import get_stage

    for params in release.shifts:
        stage = get_stage(params.stage)(params)
        if any(stage.outputs_per_input(v) > 1 for v in stage.variants()):
            return []
    users = [e.filter for e in spec.chain if "reference" in FILTER_CLASSES[e.filter].needs]
    users += ["complete_trajectory"] if spec.complete_trajectory else []
    return [f"filters: {', '.join(users)} need trajectories (a scale-0 reference per trajectory), but no "
            f"shift in `shifts` emits more than one sample per input"]
