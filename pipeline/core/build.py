"""`build`: manifest → plan → Dask tasks → journal → provenance, resumable.

1. load and validate the manifest (nothing is written if it is bad)
2. run the stages' preparations (e.g. slider training) whose outputs are stale
3. index the source and plan one WorkUnit per shard
4. skip units whose fingerprint and file sha256 already stand in the journal
5. run the rest on Dask; append each finished shard to the journal
6. with filters, the second pass (`pipeline.core.packing`): release-wide rules, then
   the staged samples packed into evenly filled shards
7. drop orphaned shards; write samples.parquet, provenance.json and the card
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask.distributed import Client

from pipeline.core.engine import check_cluster_args, check_workers_see, dask_client, run_units
from pipeline.core.journal import JournalWriter, read_journal, shard_is_done
from pipeline.core.lock import RUN_LOCK, release_lock
from pipeline.core.manifest import ManifestError, load_manifest
from pipeline.core.packing import STAGING, Packed, pack_release, pack_shard, staging_tar
from pipeline.core.plan import Plan, plan_release
from pipeline.core.preparations import release_preparations, run_preparations
from pipeline.core.records import ShardRecord, WorkUnit
from pipeline.core.task import TaskContext, filters_fingerprint, run_unit
from pipeline.release.provenance import write_release_metadata
from pipeline.writers.files import ReleaseStore, remove_temporaries
from pipeline.writers.zarr_store import ZarrLayout, ensure_store
from stages.base import UsageError


@dataclass
class BuildResult:
    out: Path | str                  # a Path for local releases, else the URL as given
    planned: int
    built: int
    skipped: int
    removed: list[str]
    counts: dict[str, int]
    seconds: float
    records: list[ShardRecord] = field(default_factory=list)
    prepared: list[str] = field(default_factory=list)   # ids of the preparations this build ran
    packed: int = 0                  # final shards (re)packed by the second pass of a filtered release

    @property
    def changed(self) -> bool:
        return bool(self.built or self.removed or self.packed)


def zarr_layouts(release: Any, plan: Plan, store: ReleaseStore) -> dict[str, ZarrLayout]:
    if "zarr" not in release.output.formats:
        return {}
    height, width = release.output.image_size
    channels = getattr(release.source, "channels", 3) or 3
    layouts = {}
    for _, variant in plan.variants:
        k = plan.outputs_per_input(variant.config)
        shard_len = release.output.samples_per_shard * k
        layouts[variant.config] = ZarrLayout(
            path=store.url(f"zarr/{variant.config}.zarr"), length=max(len(plan.index) * k, 1),
            shard_len=shard_len, height=height, width=width, channels=channels)
    return layouts


def prepare_zarr(release: Any, plan: Plan, store: ReleaseStore,
                 journal: dict[str, ShardRecord]) -> dict[str, ZarrLayout]:
    """Create stores whose layout changed; their units must be rewritten."""
    layouts = zarr_layouts(release, plan, store)
    for config, layout in layouts.items():
        attrs = {"config": config, "release": release.name, "version": release.version}
        if ensure_store(layout, attrs):
            for shard_id in [s for s, r in journal.items() if r.config == config]:
                journal.pop(shard_id)
    return layouts


def remove_orphans(store: ReleaseStore, planned: set[str], journal: dict[str, ShardRecord],
                   release: Any = None) -> list[str]:
    """Delete unit tars and journal entries that the current plan no longer has. With
    filters the units' tars are staged (final shards are the second pass's to prune);
    without, a staging area left by an earlier filtered build goes."""
    removed = []
    staged = bool(getattr(release, "filters", None))
    if not staged and store.exists(STAGING):
        store.rm(STAGING)
    folder = STAGING if staged else "data"
    planned_tars = {staging_tar(s) if staged else f"data/{s}.tar" for s in planned}
    for tar in store.glob(f"{folder}/*/*.tar"):
        if tar not in planned_tars:
            store.rm(tar)
            removed.append(tar if staged else tar[len("data/"): -len(".tar")])
    for shard_id in [s for s in journal if s not in planned]:
        journal.pop(shard_id)
        if shard_id not in removed:
            removed.append(shard_id)
    if store.exists(folder):
        store.remove_empty_folders(folder)
    planned_configs = {s.split("/")[0] for s in planned}
    for folder, suffix in (("zarr", ".zarr"), ("rejected", "")):
        for entry in store.glob(f"{folder}/*{suffix}"):
            config = entry[len(folder) + 1: len(entry) - len(suffix)]
            if config not in planned_configs:
                store.rm(entry)
    return removed


@contextmanager
def client_on_demand(workers: int | None, scheduler: str | None, say: Callable[[str], None],
                     out: str | None = None) -> Iterator[Callable[[], Client]]:
    """One Dask client for preparations and shards, opened on first use, so a
    build with nothing to do starts no cluster. With `out`, the workers must
    prove they see the release root before the first task."""
    with ExitStack() as stack:
        opened: list[Client] = []

        def client_for() -> Client:
            if not opened:
                client = stack.enter_context(dask_client(workers, scheduler))
                if out is not None:
                    ReleaseStore(out).makedirs()
                    check_workers_see(client, out)
                opened.append(client)
                if client.dashboard_link:
                    say(f"Dask dashboard: {client.dashboard_link}")
            return opened[0]

        yield client_for


def check_cuda_stages(release: Any, client_for: Callable[[], Client]) -> None:
    """A stage asking for `device: cuda` needs a worker that sees CUDA (asked
    of the workers, not the driver); otherwise bad input before any work."""
    fields = [f"shifts.{i}.device" for i, spec in enumerate(release.shifts) if getattr(spec, "device", None) == "cuda"]
    if not fields:
        return
    from pipeline.core.manifest import ManifestError
    from stages.generative.spec import check_cuda_workers, cuda_visible

    try:
        check_cuda_workers("cuda", client_for().run(cuda_visible), fields[0])
    except ValueError as exc:
        raise ManifestError(str(exc)) from None


def build_release(manifest: str | Path | Any, out: str | Path, workers: int | None = None,
                  scheduler: str | None = None, progress: bool = False,
                  on_event: Callable[[str], None] | None = None, lock: bool = True,
                  wait: float = 0.0) -> BuildResult:
    """Build (or resume) the release at `out`. Holds the release's writer lock unless `lock`
    is False (the caller holds it); raises LockHeld after `wait` seconds if another writer does."""
    started = time.perf_counter()
    release = load_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
    check_cluster_args(workers, scheduler)
    check_out(out)
    out = absolute_out(out)
    say = on_event or (lambda msg: None)
    new_root = isinstance(out, Path) and not out.exists()
    try:
        with ExitStack() as held:
            if lock:
                held.enter_context(release_lock(out, "build", wait))
            return _build_locked(release, out, workers, scheduler, progress, say, started)
    except (ManifestError, UsageError):
        if new_root:    # bad input found while planning (a model, the source): leave nothing behind
            _remove_empty_root(out)
        raise


def _remove_empty_root(root: Path) -> None:
    """Remove a release folder this run created when it holds nothing but the writer lock."""
    if root.is_dir() and {p.name for p in root.iterdir()} <= {RUN_LOCK}:
        (root / RUN_LOCK).unlink(missing_ok=True)
        root.rmdir()


def _build_locked(release: Any, out: str | Path, workers: int | None, scheduler: str | None, progress: bool,
                  say: Callable[[str], None], started: float) -> BuildResult:
    with client_on_demand(workers, scheduler, say, str(out)) as client_for:
        if scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS"):
            client_for()    # a running cluster: its workers prove they see `out` before anything is written
        check_cuda_stages(release, client_for)
        prepared = run_preparations(client_for, release_preparations(release), say)
        result = _build_planned(release, out, client_for, progress, say, started)
    result.prepared = prepared
    return result


def absolute_out(out: str | Path) -> str | Path:
    """A local release root as an absolute path (a file:// URL becomes its path), so that
    workers started in another folder write where the driver reads; URLs unchanged."""
    store = ReleaseStore(out)
    return Path(store.root) if store.local else str(out)


VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_out(out: str | Path) -> None:
    """A local --out must be a folder (or not exist yet) on a writable filesystem (exit 2 otherwise)."""
    from stages.base import UsageError

    store = ReleaseStore(out)
    if not store.local:
        return
    path = Path(store.root)
    if any(path == v or v in path.parents for v in VIRTUAL_ROOTS):
        raise UsageError(f"--out {out}: {path} is on a virtual filesystem; choose a folder on disk")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out} is a file; expected a folder (created if missing)")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--out {out} is under {existing}, which is a file")
    if os.statvfs(existing).f_flag & os.ST_RDONLY or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable")


def _build_planned(release: Any, out: str | Path, client_for: Callable[[], Client], progress: bool,
                   say: Callable[[str], None], started: float) -> BuildResult:
    plan = plan_release(release, filters_fingerprint=filters_fingerprint(release))
    store = ReleaseStore(out)
    store.makedirs()
    remove_temporaries(store.fs, store.root)

    journal = read_journal(store)
    layouts = prepare_zarr(release, plan, store, journal)
    planned = {u.shard_id for u in plan.units}
    removed = remove_orphans(store, planned, journal, release)
    todo = [u for u in plan.units if not shard_is_done(journal.get(u.shard_id), u, store)]
    say(f"planned {len(plan.units)} shards over {len(plan.index)} source items; "
        f"{len(plan.units) - len(todo)} already done, {len(todo)} to build")

    writer = JournalWriter(store)
    try:
        if todo:
            _run(plan, todo, TaskContext(release=release, out=store.out, zarr=layouts), journal, writer,
                 client_for, progress)
        records = [journal[u.shard_id] for u in plan.units]
        writer.compact(records)
    finally:
        writer.close()
    packed, final_shards = Packed(records=records, shards=[]), None
    if getattr(release, "filters", None):
        # a final shard holds what one unit would: samples_per_shard inputs' worth of outputs, so a
        # trajectory-emitting stage keeps shards of whole trajectories
        per_shard = {v.config: release.output.samples_per_shard * plan.outputs_per_input(v.config)
                     for _, v in plan.variants}
        packed = pack_release(store, release, records, layouts, per_shard, _pack_runner(store, client_for))
        final_shards = packed.shards
        say(f"second pass: {len(packed.shards)} final shards, {packed.built} packed")
    counts = write_release_metadata(store.out, release, plan, packed.records, shards=final_shards)
    return BuildResult(out=_shown(out, store), planned=len(plan.units), built=len(todo),
                       skipped=len(plan.units) - len(todo), removed=removed + packed.removed, counts=counts,
                       seconds=time.perf_counter() - started, records=records, packed=packed.built)


def _pack_runner(store: ReleaseStore, client_for: Callable[[], Client]) -> Callable:
    def run_packs(todo: list, on_done: Callable[[ShardRecord], None]) -> None:
        run_units(client_for(), todo, pack_shard, args_for=lambda pack: (pack, store.out),
                  resources_for=lambda pack: {}, on_done=on_done)

    return run_packs


def _shown(out: str | Path, store: ReleaseStore) -> Path | str:
    """Local releases as a Path (a file:// URL becomes its path); other URLs unchanged."""
    if not store.local:
        return str(out)
    return Path(store.root) if "://" in str(out) else Path(out)


def _run(plan: Plan, todo: list[WorkUnit], ctx: TaskContext, journal: dict[str, ShardRecord],
         writer: JournalWriter, client_for: Callable[[], Client], progress: bool) -> None:
    from pipeline.core.progress import BuildProgress

    n_samples = sum((u.stop - u.start) * plan.outputs_per_input(u.variant.config) for u in todo)
    client = client_for()
    with BuildProgress(len(todo), n_samples, progress) as bar:

        def done(record: ShardRecord) -> None:
            writer.append(record)
            journal[record.shard_id] = record
            bar.advance(sum(record.counts.values()), record.counts.get("error", 0))

        run_units(client, todo, run_unit,
                  args_for=lambda u: (u, plan.index.items(u.start, u.stop), ctx),
                  resources_for=lambda u: _resources(plan.stages[u.stage_index]),
                  on_done=done)


def _resources(stage: Any) -> dict:
    return dict(stage.resources or {})
