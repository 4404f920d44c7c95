"""Name -> class registries whose modules are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any


def import_registry(modules: dict[str, str], attribute: str) -> dict[str, Any]:
    """{name: module.<attribute>} for every module; a module without it is a packaging error."""
    found = {}
    for name, module_name in modules.items():
        module = importlib.import_module(module_name)
        if not hasattr(module, attribute):
            raise ImportError(f"{module_name} must export {attribute} (registered as {name!r})")
        found[name] = getattr(module, attribute)
    return found
