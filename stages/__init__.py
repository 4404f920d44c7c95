"""Shift families. Each module defines one `Stage` subclass exported as `STAGE`.

The registry maps the manifest's `stage:` name to its module; modules are
imported on demand and must not import torch/diffusers/transformers at module
level (manifest validation imports every stage's params model).
"""

from __future__ import annotations

from functools import cache

from stages.base import Batch, Stage, StageParams, Variant
from stages.registry import import_registry

STAGE_MODULES: dict[str, str] = {
    "corruptions": "stages.corruptions",
    "medical": "stages.medical",
    "nuisance": "stages.nuisance",
    "styles": "stages.styles",
    "adversarial": "stages.adversarial",
    "metashift": "stages.metashift",
}


@cache
def available_stages() -> dict[str, type[Stage]]:
    """Every registered stage class, by manifest name."""
    return import_registry(STAGE_MODULES, "STAGE")


def get_stage(name: str) -> type[Stage]:
    stages = available_stages()
    if name not in stages:
        raise KeyError(f"unknown stage {name!r}; available: {', '.join(sorted(stages))}")
    return stages[name]


__all__ = ["Batch", "Stage", "StageParams", "Variant", "available_stages", "get_stage"]
