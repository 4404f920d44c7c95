"""The release manifest: YAML in, a typed, validated `Release` out.

The model is assembled from every available stage's and source's params model
(a discriminated union on `stage:` / `kind:`), so one JSON Schema covers all of
them and a bad manifest fails before any work starts, naming the field path.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from pipeline.sources import available_sources, get_source, source_spec_model
from stages import available_stages, get_stage, stage_params_model
from stages.base import MANIFEST_DIR, ManifestError
from stages.registry import ExtensionError, is_reference

ROOT_MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
MAX_SIDE = 8192           # pixels per side of output.image_size
Side = Annotated[int, Field(ge=8, le=MAX_SIDE)]


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    formats: list[Literal["webdataset", "zarr"]] = Field(default=["webdataset"], min_length=1)
    samples_per_shard: int = Field(default=100, ge=1, le=1_000_000)
    encoding: Literal["png", "jpg"] = "png"
    jpeg_quality: int = Field(default=95, ge=1, le=100)
    image_size: tuple[Side, Side] | None = Field(
        default=None, description=f"(height, width) every image is resized to in the Zarr store (each 8..{MAX_SIDE})")

    @model_validator(mode="after")
    def _zarr_needs_size(self) -> OutputSpec:
        if "zarr" in self.formats and self.image_size is None:
            raise ValueError("output.image_size [height, width] is required when formats include zarr")
        return self


class HubSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    private: bool = False
    pretty_name: str | None = None
    task_categories: list[str] = ["image-classification"]
    source_datasets: list[str] = []
    tags: list[str] = ["robustness", "distribution-shift"]
    citation: str | None = None


def _union(models: list[type[BaseModel]], discriminator: str) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator=discriminator)]  # noqa: UP007


def _filters_field() -> tuple[Any, Any]:
    try:
        from stages.filters import FiltersSpec
    except ModuleNotFoundError as exc:
        if exc.name != "stages.filters":
            raise
        return (list[Any], Field(default=[], max_length=0, description="filters (none available)"))
    return (FiltersSpec | None, None)


@cache
def release_model(stage_refs: tuple[str, ...] = (), source_refs: tuple[str, ...] = ()) -> type[BaseModel]:
    """The `Release` pydantic model over the stages and sources present, plus the
    classes a manifest names directly ("module:Class")."""
    stage_params = [cls.Params for cls in available_stages().values()] + [stage_params_model(r) for r in stage_refs]
    source_specs = [cls.Spec for cls in available_sources().values()] + [source_spec_model(r) for r in source_refs]
    model = create_model(
        "Release",
        __config__=ConfigDict(extra="forbid", frozen=True),
        name=(str, Field(pattern=NAME_PATTERN, description="release name; also the default Hub repo name")),
        version=(str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]*$", description="release version, e.g. 1.0.0")),
        license=(str, "other"),
        description=(str, ""),
        seed=(int, Field(default=0, ge=0, lt=2**63)),
        source=(_union(source_specs, "kind"), ...),
        shifts=(list[_union(stage_params, "stage")], Field(min_length=1)),
        filters=_filters_field(),
        output=(OutputSpec, OutputSpec()),
        hub=(HubSpec, HubSpec()),
    )
    return model


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        # drop the discriminator tag pydantic inserts for unions (e.g. 'corruptions')
        path = ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {json.dumps(got, default=str)[:80]})"
        lines.append(f"  {path or '<root>'}: {err['msg']}{got_text}")
    return "\n".join(lines)


def parse_release(data: Any, origin: str = "<manifest>", folder: Path | None = None) -> BaseModel:
    """The validated release; relative paths in it are joined to `folder` (the
    manifest file's folder) when given, else left relative to the working directory."""
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        # strict, through JSON: `true` is no severity and "1e12" no count, while YAML lists still
        # fill tuples; values YAML has but JSON lacks (dates) arrive as their text
        context = None if folder is None else {MANIFEST_DIR: str(folder)}
        release = release_model(*class_references(data)).model_validate_json(
            json.dumps(data, default=str), strict=True, context=context)
    except ExtensionError as exc:
        raise ManifestError(f"{origin}: {exc}") from None
    except ValidationError as exc:
        raise ManifestError(_invalid(origin, format_validation_error(exc).splitlines())) from None
    problems = cross_section_problems(release)
    if problems:
        raise ManifestError(_invalid(origin, [f"  {p}" for p in problems]))
    return release


def _invalid(origin: str, lines: list[str]) -> str:
    """One problem: one line; more: one line each under a heading."""
    if len(lines) == 1:
        return f"{origin}: invalid release manifest: {lines[0].strip()}"
    return f"{origin}: invalid release manifest\n" + "\n".join(lines)


def class_references(data: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The "module:Class" names a manifest uses as `stage:` and as `source.kind`."""
    shifts = data.get("shifts")
    stages = {s["stage"] for s in shifts if isinstance(s, dict) and is_reference(s.get("stage"))} \
        if isinstance(shifts, list) else set()
    source = data.get("source")
    kinds = (source["kind"],) if isinstance(source, dict) and is_reference(source.get("kind")) else ()
    return tuple(sorted(stages)), kinds


def cross_section_problems(release: BaseModel) -> list[str]:
    """Checks no single section can make alone (a shift vs the output encoding, filters vs shifts)."""
    problems = []
    for i, spec in enumerate(release.shifts):
        stage = get_stage(spec.stage)
        if getattr(stage, "requires_lossless", False) and release.output.encoding != "png":
            problems.append(f"output.encoding: shifts.{i} ({spec.stage}) needs lossless output, so "
                            f"'png' is required (got {release.output.encoding!r}); JPEG destroys the shift")
        exact_size = getattr(stage, "exact_output_size", lambda _: None)(spec)
        if getattr(stage, "requires_exact_pixels", False) and "zarr" in release.output.formats and (
                exact_size is None or tuple(exact_size) != tuple(release.output.image_size)):
            problems.append(f"output.formats: shifts.{i} ({spec.stage}) stores a budgeted perturbation; the "
                            "Zarr store resizes every image to output.image_size and rounds again, which "
                            "breaks the budget: drop 'zarr' or give the stage a fixed output size equal to "
                            f"output.image_size {release.output.image_size}")
    if getattr(release, "filters", None) is not None:
        from stages.filters import release_problems

        problems.extend(release_problems(release, get_source(release.source.kind)))
    return problems


def load_manifest(path: str | Path) -> BaseModel:
    """Read, parse and validate within the bounds of `pipeline.core.bounded_yaml` (size, encoding,
    nesting, alias expansion, duplicate keys); every failure is a one-line ManifestError."""
    from pipeline.core.bounded_yaml import BoundExceeded, load_bounded_yaml, read_manifest_text

    path = Path(path)
    try:
        data = load_bounded_yaml(read_manifest_text(path))
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except BoundExceeded as exc:
        raise ManifestError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_release(data, origin=str(path), folder=path.absolute().parent)


def manifest_sha256(release: BaseModel) -> str:
    return hashlib.sha256(canonical_json(release.model_dump(mode="json")).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def export_schema(out_dir: str | Path) -> Path:
    out = Path(out_dir) / "release.schema.json"
    out.write_text(json.dumps(release_model().model_json_schema(), indent=2) + "\n")
    return out
