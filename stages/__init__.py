"""Shift families. Each module defines one `Stage` subclass exported as `STAGE`.

The registry maps the manifest's `stage:` name to its module; modules are
imported on demand and must not import torch/diffusers/transformers at module
level (manifest validation imports every stage's params model). Third-party
stages join through the `shiftforge.stages` entry-point group, or are named
in a manifest as "package.module:Class" (see stages.registry).
"""

from __future__ import annotations

__version__ = "0.1.0"   # the shiftforge distribution's version (pipeline.__version__ is this one)

from functools import cache

from stages.base import Batch, Stage, StageParams, Variant
from stages.registry import Contract, import_registry, lookup, reference_model, registered

STAGE_MODULES: dict[str, str] = {
    "corruptions": "stages.corruptions",
    "medical": "stages.medical",
    "nuisance": "stages.nuisance",
    "styles": "stages.styles",
    "adversarial": "stages.adversarial",
    "metashift": "stages.metashift",
}

STAGE_CONTRACT = Contract(what="stage", group="shiftforge.stages", base=Stage, model_attr="Params",
                          model_base=StageParams, name_attr="name", tag="stage", module_attr="STAGE",
                          required=("version",))


@cache
def available_stages() -> dict[str, type[Stage]]:
    """Every registered stage class, by manifest name: built-in, then entry points."""
    return registered(import_registry(STAGE_MODULES, "STAGE"), STAGE_CONTRACT)


def get_stage(name: str) -> type[Stage]:
    """The stage class for a manifest `stage:` (a registered name or "module:Class")."""
    return lookup(name, available_stages(), STAGE_CONTRACT)


def stage_params_model(name: str) -> type[StageParams]:
    """The params model a manifest entry with this `stage:` validates against."""
    return reference_model(name, STAGE_CONTRACT) if ":" in name else get_stage(name).Params


__all__ = ["Batch", "Stage", "StageParams", "Variant", "available_stages", "get_stage", "stage_params_model"]
