"""Sources of clean images, by manifest `kind`. Each module exports `SOURCE`."""

from __future__ import annotations

from functools import cache

from pipeline.sources.base import Loaded, Source, SourceError, SourceItem, SourceSpec, safe_key
from stages.registry import import_registry

SOURCE_MODULES: dict[str, str] = {
    "samples": "pipeline.sources.samples",
    "folder": "pipeline.sources.folder",
    "webdataset": "pipeline.sources.webdataset",
    "npz": "pipeline.sources.npz",
    "prompts": "pipeline.sources.prompts",
    "coco": "pipeline.sources.coco",
    "scene_graph": "pipeline.sources.scene_graph",
}


@cache
def available_sources() -> dict[str, type[Source]]:
    """Every registered source class, by manifest `kind`."""
    return import_registry(SOURCE_MODULES, "SOURCE")


def open_source(spec: SourceSpec) -> Source:
    return available_sources()[spec.kind](spec)


__all__ = ["Loaded", "Source", "SourceError", "SourceItem", "SourceSpec", "available_sources",
           "open_source", "safe_key"]
