"""Preparations: once-per-release jobs that stages need before planning, such
as training the LoRA sliders a nuisance stage reads.

Each runs as one Dask task, on a worker offering its resources (e.g. GPU),
unless its output already records the same fingerprint: a rerun resumes where
it stopped and an unchanged release prepares nothing. They run before
planning because shard fingerprints include the sha256 of what they write.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.core.manifest import ManifestError
from pipeline.core.plan import build_stages
from stages.base import Preparation

if TYPE_CHECKING:  # provenance imports this module; Dask loads only when something runs
    from dask.distributed import Client

log = logging.getLogger(__name__)


class PreparationError(RuntimeError):
    """A preparation failed; nothing that depends on it was built."""


def release_preparations(release: Any) -> list[Preparation]:
    """Every stage's preparations, one per output (the same output asked for
    twice with the same inputs runs once; with different inputs it is bad input)."""
    by_output: dict[str, Preparation] = {}
    for i, stage in enumerate(build_stages(release)):
        try:
            found = stage.preparations()
        except (ValueError, FileNotFoundError) as exc:
            raise ManifestError(f"shifts.{i} ({stage.name}): {exc}") from None
        for prep in found:
            same = by_output.setdefault(prep.output, prep)
            if same.fingerprint != prep.fingerprint:
                raise ManifestError(
                    f"shifts.{i} ({stage.name}): {prep.output!r} is prepared twice with different inputs "
                    f"({same.id} and {prep.id})")
    return list(by_output.values())


def run_preparations(client_for: Callable[[], Client], preparations: list[Preparation],
                     say: Callable[[str], None]) -> list[str]:
    """Run the preparations whose output is missing or stale; returns their ids.
    `client_for()` opens the Dask client only when something has to run."""
    todo = [prep for prep in preparations if not prep.is_current()]
    if preparations:
        say(f"{len(preparations)} preparations, {len(preparations) - len(todo)} already done, {len(todo)} to run")
    if not todo:
        return []
    from dask.distributed import as_completed

    from pipeline.core.engine import cluster_resources

    client = client_for()
    offered = cluster_resources(client)
    futures = {}
    for prep in todo:
        usable = {k: v for k, v in prep.resources.items() if k in offered}
        if usable != prep.resources:
            log.warning("no worker offers %s; preparing %s on any worker", sorted(set(prep.resources) - set(usable)),
                        prep.id)
        key = hashlib.sha256(f"{prep.output}\x1f{prep.fingerprint}".encode()).hexdigest()[:20]
        futures[client.submit(prep.run, key=f"prepare-{key}", resources=usable or None, pure=False)] = prep
    for future in as_completed(list(futures), loop=client.loop):
        prep = futures[future]
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - re-raised with the preparation named
            raise PreparationError(f"preparation {prep.id} ({prep.output}) failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
        if not prep.is_current():
            raise PreparationError(f"preparation {prep.id} finished but {prep.output} does not record its fingerprint")
        say(f"prepared {prep.id} -> {prep.output}")
    return [prep.id for prep in todo]


def preparation_records(stages: list[Any]) -> list[dict[str, Any]]:
    """What each stage prepared (e.g. a trained slider's path, sha256 and training
    provenance), for provenance.json."""
    return [{"id": prep.id, "stage": stage.name, "output": prep.output, "fingerprint": prep.fingerprint,
             **(prep.record() or {"missing": True})}
            for stage in stages for prep in stage.preparations()]
