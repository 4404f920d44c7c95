"""Sources of clean images, by manifest `kind`. Each module exports `SOURCE`.

Third-party sources join through the `shiftforge.sources` entry-point group,
or are named in a manifest as `kind: "package.module:Class"` (stages.registry).
"""

from __future__ import annotations

from functools import cache

from pipeline.sources.base import Loaded, Source, SourceError, SourceItem, SourceSpec, safe_key
from stages.registry import Contract, import_registry, lookup, reference_model, registered

SOURCE_MODULES: dict[str, str] = {
    "samples": "pipeline.sources.samples",
    "folder": "pipeline.sources.folder",
    "webdataset": "pipeline.sources.webdataset",
    "npz": "pipeline.sources.npz",
    "prompts": "pipeline.sources.prompts",
    "coco": "pipeline.sources.coco",
    "scene_graph": "pipeline.sources.scene_graph",
}

SOURCE_CONTRACT = Contract(what="source", group="shiftforge.sources", base=Source, model_attr="Spec",
                           model_base=SourceSpec, name_attr="kind", tag="kind", module_attr="SOURCE")


@cache
def available_sources() -> dict[str, type[Source]]:
    """Every registered source class, by manifest `kind`: built-in, then entry points."""
    return registered(import_registry(SOURCE_MODULES, "SOURCE"), SOURCE_CONTRACT)


def get_source(kind: str) -> type[Source]:
    """The source class for a manifest `kind:` (a registered name or "module:Class")."""
    return lookup(kind, available_sources(), SOURCE_CONTRACT)


def source_spec_model(kind: str) -> type[SourceSpec]:
    """The model a manifest `source:` with this `kind:` validates against."""
    return reference_model(kind, SOURCE_CONTRACT) if ":" in kind else get_source(kind).Spec


def open_source(spec: SourceSpec) -> Source:
    return get_source(spec.kind)(spec)


__all__ = ["Loaded", "Source", "SourceError", "SourceItem", "SourceSpec", "available_sources",
           "get_source", "open_source", "safe_key", "source_spec_model"]
