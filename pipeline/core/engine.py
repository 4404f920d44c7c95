"""Dask execution: a LocalCluster by default, any scheduler by address.

The engine knows nothing about shifts: it submits `run_unit` once per work
unit with the unit's resource needs, keeps a bounded number in flight, and
hands each finished ShardRecord to a callback as it completes.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice, zip_longest
from typing import Any

import dask.config
from dask.distributed import Client, LocalCluster, as_completed

from pipeline.core.records import ShardRecord, WorkUnit
from stages.base import UsageError

log = logging.getLogger(__name__)


SCHEDULER_ADDRESS = re.compile(r"^(?:(?:tcp|tls|inproc|ucx|ws|wss)://[^\s/]+(?:/\S*)?|[A-Za-z0-9_.-]+:\d{1,5})$")
CONNECT_TIMEOUT_S = 20


class ClusterError(Exception):
    """The cluster cannot run this build: an unreachable scheduler (exit 1)."""


class WorkersCannotSee(UsageError):
    """Workers cannot reach the release root, e.g. a local path on a remote cluster (exit 2)."""


def check_cluster_args(workers: int | None, scheduler: str | None) -> None:
    """Bad --workers / --scheduler values fail before anything starts (exit 2)."""
    if workers is not None and not 1 <= workers <= 4096:
        raise UsageError(f"--workers must be between 1 and 4096 (got {workers})")
    if scheduler is not None and not SCHEDULER_ADDRESS.match(scheduler):
        raise UsageError(f"--scheduler {scheduler!r} is not a scheduler address; expected e.g. tcp://10.0.0.5:8786")


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None,
                dashboard: bool = True) -> Iterator[Client]:
    """A client on `scheduler` (or DASK_SCHEDULER_ADDRESS), else a fresh LocalCluster
    with one single-threaded worker process per core."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    check_cluster_args(workers, address)
    if address:
        with _connect(address) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    # Dask's default MALLOC_TRIM_THRESHOLD_ turns off glibc's adaptive mmap threshold, so every
    # image-sized NumPy temporary is mmapped, page-faulted and unmapped again: ~25 % slower
    # stages. The workers keep the single-threaded BLAS/OpenMP settings. The statistical
    # profiler (the dashboard's Profile page) samples every task's stack every 10 ms: ~3 %.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                          "distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0" if dashboard else None,
                               silence_logs=logging.CRITICAL)  # a task failure is reported once, by the driver
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _connect(address: str) -> Client:
    try:
        return Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} "
                           f"within {CONNECT_TIMEOUT_S}s ({type(exc).__name__})") from None


def _write_probe(url: str, name: str) -> str:
    """On a worker: write a probe file into the release root (not creating the root)."""
    from pipeline.writers.files import filesystem

    fs, root = filesystem(url)
    with fs.open(f"{root}/{name}", "wb") as handle:
        handle.write(name.encode())
    return name


def check_workers_see(client: Client, out: str) -> None:
    """Every worker writes a probe file into the release root and the driver reads each back:
    workers on other machines with a local path (or memory://) would write where nobody looks."""
    from pipeline.writers.files import ReleaseStore

    store = ReleaseStore(out)
    token = uuid.uuid4().hex[:12]
    try:
        written = client.run(lambda dask_worker: _write_probe(out, f".probe-{token}-{_slug(dask_worker.address)}"),
                             on_error="return")
    finally:
        seen = set(store.glob(f".probe-{token}-*")) if store.exists() else set()
        for name in seen:
            store.rm(name)
    blind = sorted(w for w, name in written.items() if isinstance(name, BaseException) or name not in seen)
    if blind:
        raise WorkersCannotSee(f"workers cannot see {out} ({len(blind)} of {len(written)}, e.g. {blind[0]}): "
                           "use a folder shared by all machines or an object-store URL")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def cluster_resources(client: Client) -> dict[str, float]:
    """Total of each declared worker resource (e.g. GPU) over the cluster."""
    totals: dict[str, float] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        for name, amount in (info.get("resources") or {}).items():
            totals[name] = totals.get(name, 0) + amount
    return totals


def run_units(client: Client, units: Sequence[WorkUnit], task: Callable,
              args_for: Callable[[WorkUnit], tuple], resources_for: Callable[[WorkUnit], dict],
              on_done: Callable[[ShardRecord], None],
              window: int | None = None, retries: int = 2) -> None:
    """Run task(*args_for(unit)) for every unit; at most `window` in flight.

    A resource that no worker offers would leave tasks waiting forever, so it
    is dropped with a warning (e.g. a GPU stage on a CPU-only LocalCluster).
    """
    offered = cluster_resources(client)
    workers = client.scheduler_info(n_workers=-1)["workers"]
    n_workers = max(1, len(workers))
    window = window or 4 * n_workers
    warned: set[str] = set()
    placed: dict[str, str] = {}

    def submit(unit: WorkUnit):
        wanted = resources_for(unit) or {}
        usable = {k: v for k, v in wanted.items() if k in offered}
        for missing in set(wanted) - set(usable) - warned:
            warned.add(missing)
            log.warning("no worker offers resource %r; running those tasks on any worker", missing)
        where = affinity_worker(getattr(unit, "affinity", None), usable, workers, placed)
        return client.submit(task, *args_for(unit), key=f"shard-{unit.fingerprint[:20]}-{unit.shard_id}",
                             resources=usable or None, retries=retries, pure=False,
                             workers=where, allow_other_workers=where is not None)

    pending = iter(order_by_affinity(units, n_workers))
    futures = as_completed([submit(unit) for unit in islice(pending, window)], loop=client.loop)
    for future in futures:
        record = future.result()
        future.release()
        on_done(record)
        nxt = next(pending, None)
        if nxt is not None:
            futures.add(submit(nxt))


def order_by_affinity(units: Sequence[Any], lanes: int = 1) -> list[Any]:
    """Submission order: affinity groups in order of first appearance, taken `lanes` (workers)
    at a time and interleaved, so every worker works through its own group while all workers
    stay busy; units without a group keep their order."""
    groups: dict[Any, list[Any]] = {}
    for position, unit in enumerate(units):
        groups.setdefault(getattr(unit, "affinity", None) or ("alone", position), []).append(unit)
    members = list(groups.values())
    ordered: list[Any] = []
    for first in range(0, len(members), max(1, lanes)):
        for row in zip_longest(*members[first:first + max(1, lanes)]):
            ordered += [unit for unit in row if unit is not None]
    return ordered


def affinity_worker(group: str | None, resources: dict[str, float], workers: dict[str, dict],
                    placed: dict[str, str]) -> list[str] | None:
    """The worker a group's units prefer: groups dealt round robin over the workers that offer
    `resources`, in address order (a preference only: a lost worker's tasks run elsewhere)."""
    if group is None:
        return None
    if group not in placed:
        able = sorted(address for address, info in workers.items()
                      if all(info.get("resources", {}).get(k, 0) >= v for k, v in resources.items()))
        if not able:
            return None
        placed[group] = able[len(placed) % len(able)]
    return [placed[group]]
