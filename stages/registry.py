"""Name -> class registries: built-in modules imported on first use, plus
third-party classes found through entry points or named as "module:Class".

An extension package declares, in its pyproject.toml,

    [project.entry-points."shiftforge.stages"]
    my_stage = "my_pkg.my_module:MyStage"

and the manifest then says `stage: my_stage` (sources: group
"shiftforge.sources", `kind:`). A one-off class needs no entry point: the
manifest names it as `stage: "my_pkg.my_module:MyStage"`.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any


class ExtensionError(Exception):
    """A third-party stage or source that cannot be used (bad input, exit 2)."""


@dataclass(frozen=True)
class Contract:
    """What a registered class must look like: a subclass of `base` whose
    `model_attr` (e.g. Params) subclasses `model_base` and whose `name_attr`
    (e.g. name) matches the discriminator field `tag` of that model."""

    what: str                   # "stage" or "source", named in errors
    group: str                  # entry-point group, e.g. "shiftforge.stages"
    base: type
    model_attr: str
    model_base: type
    name_attr: str
    tag: str                    # discriminator field of the model, e.g. "stage"
    module_attr: str            # what a module entry point exports, e.g. "STAGE"
    required: tuple[str, ...] = ()   # further class attributes that must be strings


def import_registry(modules: dict[str, str], attribute: str) -> dict[str, Any]:
    """{name: module.<attribute>} for every module; a module without it is a packaging error."""
    found = {}
    for name, module_name in modules.items():
        module = importlib.import_module(module_name)
        if not hasattr(module, attribute):
            raise ImportError(f"{module_name} must export {attribute} (registered as {name!r})")
        found[name] = getattr(module, attribute)
    return found


def is_reference(name: str) -> bool:
    """Whether a manifest `stage:`/`kind:` names a class directly ("module:Class")."""
    return isinstance(name, str) and ":" in name


def _tag_literals(model: type, tag: str) -> tuple[Any, ...]:
    field = getattr(model, "model_fields", {}).get(tag)
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return ()
    return typing.get_args(field.annotation)


def check_class(obj: Any, contract: Contract, origin: str, name: str | None) -> type:
    """`obj` itself when it honours the contract, else ExtensionError naming `origin`."""
    what = f"{contract.what} {origin}"
    if not (isinstance(obj, type) and issubclass(obj, contract.base)):
        raise ExtensionError(f"{what} is not a {contract.base.__name__} subclass (got {obj!r})")
    model = getattr(obj, contract.model_attr, None)
    if not (isinstance(model, type) and issubclass(model, contract.model_base)):
        raise ExtensionError(f"{what} has no {contract.model_attr} model "
                             f"(a {contract.model_base.__name__} subclass)")
    for attr in (contract.name_attr, *contract.required):
        if not isinstance(getattr(obj, attr, None), str):
            raise ExtensionError(f"{what} has no string `{attr}`")
    if name is not None:
        if getattr(obj, contract.name_attr) != name:
            raise ExtensionError(f"{what}: {contract.name_attr} is {getattr(obj, contract.name_attr)!r}, "
                                 f"but it is registered as {name!r}")
        if name not in _tag_literals(model, contract.tag):
            raise ExtensionError(f"{what}: {contract.model_attr}.{contract.tag} must be Literal[{name!r}]")
    return obj


def _from_module(loaded: Any, contract: Contract) -> Any:
    """An entry point may name the class or a module exporting it as STAGE/SOURCE."""
    if isinstance(loaded, type(importlib)):
        return getattr(loaded, contract.module_attr, None)
    return loaded


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def entry_point_classes(contract: Contract, builtin: set[str]) -> dict[str, type]:
    """Every class registered under the contract's entry-point group, by name."""
    found: dict[str, type] = {}
    for ep in sorted(entry_points(group=contract.group), key=lambda e: e.name):
        origin = f"{ep.name!r} (entry point {ep.value} in group {contract.group})"
        if ep.name in builtin:
            raise ExtensionError(f"{contract.what} {origin} shadows the built-in {contract.what} {ep.name!r}")
        if ep.name in found:
            raise ExtensionError(f"{contract.what} {origin} is registered twice")
        if is_reference(ep.name):
            raise ExtensionError(f"{contract.what} {origin}: a registered name may not contain ':'")
        try:
            loaded = ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported the same way
            raise ExtensionError(f"{contract.what} {origin} cannot be loaded: {_one_line(exc)}") from None
        found[ep.name] = check_class(_from_module(loaded, contract), contract, origin, ep.name)
    return found


@cache
def load_reference(ref: str, contract: Contract) -> type:
    """The class a manifest names as "package.module:Class"."""
    module_name, _, attr = ref.partition(":")
    origin = repr(ref)
    if not module_name or not attr:
        raise ExtensionError(f"{contract.what} {origin} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - third-party code
        raise ExtensionError(f"{contract.what} {origin} cannot be imported: {_one_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ExtensionError(f"{contract.what} {origin}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return check_class(obj, contract, origin, None)


@cache
def reference_model(ref: str, contract: Contract) -> type:
    """The class's params model with its discriminator accepting `ref` itself, so a
    manifest entry naming the class validates in the release's tagged union."""
    from typing import Literal

    from pydantic import create_model

    model = getattr(load_reference(ref, contract), contract.model_attr)
    return create_model(model.__name__, __base__=model, __module__=model.__module__,
                        **{contract.tag: (Literal[ref], ...)})


def registered(builtin: dict[str, type], contract: Contract) -> dict[str, type]:
    """The built-in classes, then the classes of the installed entry points."""
    return {**builtin, **entry_point_classes(contract, set(builtin))}


def lookup(name: str, classes: dict[str, type], contract: Contract) -> type:
    """The class a manifest names: a registered name or a "module:Class" reference."""
    if is_reference(name):
        return load_reference(name, contract)
    if name not in classes:
        raise KeyError(f"unknown {contract.what} {name!r}; available: {', '.join(sorted(classes))}")
    return classes[name]
