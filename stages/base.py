"""The contract every shift family implements.

A stage is a pure batch transform: it gets decoded images plus per-sample
seeds and returns shifted images. It knows nothing about Dask, files or
manifests; the engine owns all of that. Randomness comes only from the
per-sample seeds the engine derives from (release seed, stage, variant, key).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, ValidationInfo

SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class UsageError(Exception):
    """Bad input from the user (exit 2)."""


class ManifestError(Exception):
    """A manifest that cannot be used; the message lists every problem with its field path (exit 2).
    Importable as `pipeline.core.manifest.ManifestError`; defined here so that sources can raise it."""


# validation-context key: the folder of the manifest file being validated
MANIFEST_DIR = "manifest_dir"


class ManifestStr(str):
    """A path joined to the manifest's folder that remembers how the manifest wrote it.

    Code uses it as the joined path; JSON dumps (provenance, fingerprints, the
    manifest sha256) record the path as written, so moving a project folder
    changes no fingerprint (file contents are fingerprinted by sha256 anyway).
    """

    as_written: str

    def __new__(cls, joined: str, as_written: str) -> ManifestStr:
        obj = super().__new__(cls, joined)
        obj.as_written = as_written
        return obj

    def __reduce__(self) -> tuple:
        return ManifestStr, (str(self), self.as_written)


def resolve_manifest_path(value: Any, info: ValidationInfo, only_if_exists: bool = False) -> Any:
    """A relative path in a manifest, joined to the manifest's folder (as compose files do).

    Absolute paths, `~` paths and URLs (`scheme://`) stay as written, and so does
    everything when the manifest did not come from a file (no folder in the
    validation context: then paths stay relative to the working directory).
    With `only_if_exists`, for a field that takes a path or a hub repo id, the
    value is joined only when it starts with ./ or ../ or names something that
    exists in the manifest's folder.
    """
    base = (info.context or {}).get(MANIFEST_DIR) if isinstance(info.context, dict) else None
    if base is None or not isinstance(value, str) or not value or "://" in value or value.startswith("~"):
        return value
    if Path(value).is_absolute():
        return value
    joined = os.path.normpath(Path(base) / value)
    if only_if_exists and not value.startswith(("./", "../")) and not os.path.exists(joined):
        return value
    return ManifestStr(joined, getattr(value, "as_written", value))


def _as_written(value: str) -> str:
    return getattr(value, "as_written", value)


def _resolve_path_or_id(value: Any, info: ValidationInfo) -> Any:
    return resolve_manifest_path(value, info, only_if_exists=True)


_WRITTEN = PlainSerializer(_as_written, return_type=str, when_used="json")
# a file or folder named in a manifest; relative to the manifest's folder
ManifestPath = Annotated[str, AfterValidator(resolve_manifest_path), _WRITTEN]
# a local folder relative to the manifest's folder, or else a hub repo id kept as written
ManifestPathOrId = Annotated[str, AfterValidator(_resolve_path_or_id), _WRITTEN]


class StageParams(BaseModel):
    """Base of every stage's typed params model (one entry of `shifts:`).

    Subclasses add `stage: Literal["<name>"]` plus their own fields; unknown
    fields are rejected so a typo in a manifest fails validation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Variant:
    """One point of a stage's grid, e.g. gaussian_noise at severity 3.

    `config` names the output folder `data/<config>/`; only [A-Za-z0-9_-].
    `params` must be JSON-serialisable: it goes into every sample's provenance
    and into the work-unit fingerprint.
    """

    stage: str
    config: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.config or not set(self.config) <= SAFE_CHARS:
            raise ValueError(f"variant config {self.config!r} must be non-empty and only [A-Za-z0-9_-]")

    def token(self) -> str:
        payload = json.dumps({"stage": self.stage, "config": self.config, "params": self.params},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Batch:
    """A batch of samples flowing through stages and filters.

    Lists are parallel, one entry per sample. A stage may return more samples
    than it received (e.g. one trajectory of several scales per input); every
    output sample then keeps its input's `source_key` and gets a new unique
    `key`. Samples whose `status` is not "ok" are carried along untouched.
    `shift` holds per-sample shift details beyond the variant params (a drawn
    motion-blur angle, a trajectory id, a scale); it lands in provenance.
    `image` is None for sources without pixels (e.g. prompts for text-to-image).
    """

    keys: list[str]
    images: list[np.ndarray | None]
    seeds: list[int]
    source_keys: list[str] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    shift: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, float]] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.keys)
        if not self.source_keys:
            self.source_keys = list(self.keys)
        for name, default in (("labels", None), ("meta", dict), ("shift", dict), ("scores", dict),
                              ("status", "ok"), ("reason", "")):
            if not getattr(self, name):
                setattr(self, name, [default() if callable(default) else default for _ in range(n)])
        for name in ("images", "seeds", "source_keys", "labels", "meta", "shift", "scores", "status", "reason"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Batch.{name} has {len(getattr(self, name))} entries, expected {n}")

    def __len__(self) -> int:
        return len(self.keys)

    def rng(self, i: int) -> np.random.Generator:
        """The generator for sample i; the only randomness a stage may use."""
        return np.random.default_rng(self.seeds[i])

    def ok_indices(self) -> list[int]:
        return [i for i, s in enumerate(self.status) if s == "ok"]

    def fail(self, i: int, reason: str, status: str = "error") -> None:
        self.status[i] = status
        self.reason[i] = reason
        self.images[i] = None

    def select(self, indices: list[int]) -> Batch:
        pick = lambda xs: [xs[i] for i in indices]  # noqa: E731
        return Batch(keys=pick(self.keys), images=pick(self.images), seeds=pick(self.seeds),
                     source_keys=pick(self.source_keys), labels=pick(self.labels),
                     meta=pick(self.meta), shift=pick(self.shift), scores=pick(self.scores),
                     status=pick(self.status), reason=pick(self.reason))

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        out = Batch(keys=[], images=[], seeds=[])
        for b in batches:
            for name in ("keys", "images", "seeds", "source_keys", "labels", "meta", "shift",
                         "scores", "status", "reason"):
                getattr(out, name).extend(getattr(b, name))
        return out


@dataclass(frozen=True)
class Preparation:
    """Work a stage needs done once per release before its shards can be
    planned, e.g. training a LoRA slider whose file the stage then reads.

    The engine runs `run()` as one task, on a worker offering `resources`,
    unless `record()` shows that `output` already exists and was made from
    this `fingerprint` (a digest of every input). `run` writes `output`
    atomically, records `fingerprint` with it and returns `record()`'s dict;
    `record()` returns what an existing output says about itself (its
    "fingerprint", sha256, how it was made) or None when there is none.
    """

    id: str
    output: str
    fingerprint: str
    run: Callable[[], dict[str, Any]]
    record: Callable[[], dict[str, Any] | None]
    resources: dict[str, float] = field(default_factory=dict)

    def is_current(self) -> bool:
        found = self.record()
        return found is not None and found.get("fingerprint") == self.fingerprint


class Stage:
    """Base class of a shift family.

    Subclasses set `name`, `version`, `Params`, implement `variants()` and
    `apply()`, and override `weight_hashes()` when they load model weights
    (weights must load lazily, once per worker process, on first `apply`).
    `resources` is what a task needs from a Dask worker, e.g. {"GPU": 1}.
    `needs_image` is False for stages that generate from labels/prompts only.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[StageParams]]
    resources: ClassVar[dict[str, float]] = {}
    needs_image: ClassVar[bool] = True
    # params that only choose which variants exist (e.g. the list of severities);
    # changing them must not invalidate shards of variants that stay
    grid_fields: ClassVar[tuple[str, ...]] = ()
    # True when the variants of one slice reuse each other's work inside a worker process
    # (e.g. the slider-free prefix every shift of a trajectory shares): the engine then runs
    # them one after another on the same worker; outputs never depend on it
    shares_work_across_variants: ClassVar[bool] = False

    def __init__(self, params: StageParams):
        self.params = params

    def variants(self) -> list[Variant]:
        raise NotImplementedError

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        raise NotImplementedError

    def outputs_per_input(self, variant: Variant) -> int:
        """How many samples apply() returns per input sample (sizes Zarr regions)."""
        return 1

    def weight_hashes(self) -> dict[str, str]:
        """sha256 of every model/adapter file this stage uses, by name/path."""
        return {}

    def check_source(self, description: dict[str, Any]) -> None:
        """Raise ValueError when this stage cannot work on the source `description`
        (`Source.describe()`, e.g. its class names); called at plan time, before any work."""

    def preparations(self) -> list[Preparation]:
        """Jobs whose outputs this stage reads, run before planning (default none)."""
        return []

    def release_files(self, rows: list[dict[str, Any]], source: Any, image_ext: str) -> dict[str, bytes]:
        """Extra files for the release folder, made from this stage's sample rows
        (as in samples.parquet) once the shards are built: relative path -> content
        (e.g. a COCO annotations file per config). `source` is the release's source;
        `image_ext` the extension of the images in the shards."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "params": self.params.model_dump(mode="json"),
            "weights": self.weight_hashes(),
        }

    def work_fingerprint(self) -> dict[str, Any]:
        """What every shard of this stage depends on besides its variant: the
        fingerprint without the grid fields."""
        fp = self.fingerprint()
        fp["params"] = {k: v for k, v in fp["params"].items() if k not in self.grid_fields}
        return fp
