"""Dask execution: a LocalCluster by default, any scheduler by address.

The engine knows nothing about shifts: it submits `run_unit` once per work
unit with the unit's resource needs, keeps a bounded number in flight, and
hands each finished ShardRecord to a callback as it completes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice

import dask.config
from dask.distributed import Client, LocalCluster, as_completed

from pipeline.records import ShardRecord, WorkUnit

log = logging.getLogger(__name__)


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None,
                dashboard: bool = True) -> Iterator[Client]:
    """A client on `scheduler` (or DASK_SCHEDULER_ADDRESS), else a fresh LocalCluster
    with one single-threaded worker process per core."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        with Client(address, set_as_default=False) as client:
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
                               dashboard_address=":0" if dashboard else None, silence_logs=logging.ERROR)
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


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
    n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    window = window or 4 * n_workers
    warned: set[str] = set()

    def submit(unit: WorkUnit):
        wanted = resources_for(unit) or {}
        usable = {k: v for k, v in wanted.items() if k in offered}
        for missing in set(wanted) - set(usable) - warned:
            warned.add(missing)
            log.warning("no worker offers resource %r; running those tasks on any worker", missing)
        return client.submit(task, *args_for(unit), key=f"shard-{unit.fingerprint[:20]}-{unit.shard_id}",
                             resources=usable or None, retries=retries, pure=False)

    pending = iter(units)
    futures = as_completed([submit(unit) for unit in islice(pending, window)], loop=client.loop)
    for future in futures:
        record = future.result()
        future.release()
        on_done(record)
        nxt = next(pending, None)
        if nxt is not None:
            futures.add(submit(nxt))
