"""Turning the plan into Dask tasks (units of strips, see :mod:`tilepipe.partition`) and running them.

* in-process (default): Dask's threaded scheduler runs ``workers`` block tasks at once, so reading
  and writing of some blocks overlaps the forward pass of another while the one model (loaded
  once) serialises its batches;
* ``cluster="local:N"``: a ``distributed.LocalCluster`` of N single-threaded worker processes,
  started for this run and torn down at its end;
* ``scheduler="tcp://host:8786"``: an existing ``dask.distributed`` cluster (``dask scheduler`` /
  ``dask worker``, dask-jobqueue, dask-kubernetes). tilepipe connects and never shuts it down.

Tasks carry a :class:`RunContext` and their units, never open files or models: each worker
process opens the source and loads the model once (per-process caches in :mod:`tilepipe.blocks`).
The tasks are independent (no task reads another's result), so any scheduler may run them in any
order and on any worker. On a cluster the strips are cut into more units until there are at least
two tasks per slot (GPU or worker thread), at the cost of the tile rows straddling each cut.
When workers declare a ``GPU`` resource (``dask worker --resources GPU=1``), every task asks
for one unit of it, so each GPU runs one task (one model) at a time. A worker that dies mid-task
is handled by Dask, which runs the task elsewhere (its blocks already recorded are rewritten with
the same bytes); a block that fails for a data reason comes back as a report with its error, and
the other blocks go on.

A stop (:mod:`tilepipe.stopping`) starts no new task; in this process a running task stops after
the block it is writing, and on a cluster the client cancels the futures not yet done. Blocks not
stored are then simply absent from the reports: ``--resume`` runs them.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import dask

from .blocks import BlockReport, RunContext, block_listener, process_task
from .device import resolve_device, resolve_precision
from .engine import EngineOptions
from .errors import TilepipeError
from .grid import Unit
from .sources.geotiff import GDAL_CACHE_MB
from .stopping import Stop


def local_cluster_workers(cluster: str) -> int:
    """N of ``--cluster local:N``."""
    kind, _, count = cluster.partition(":")
    if kind != "local" or not count.isdigit() or int(count) < 1:
        raise TilepipeError(f"--cluster {cluster!r}: expected local:N, e.g. local:4")
    return int(count)


@dataclass(frozen=True)
class Scheduling:
    """Where the tasks run: ``workers`` threads here, a LocalCluster, or an existing scheduler."""

    workers: int
    cluster: str | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        # each value was read by its option's parser; what no single option can check is here
        if self.cluster and self.scheduler:
            raise TilepipeError("give either --cluster or --scheduler, not both")

    @property
    def distributed(self) -> bool:
        return bool(self.cluster or self.scheduler)

    @property
    def local_workers(self) -> int:
        return local_cluster_workers(self.cluster)

    def describe(self) -> str:
        if self.scheduler:
            return f"dask.distributed at {self.scheduler}"
        if self.cluster:
            return f"dask.distributed LocalCluster of {self.local_workers} worker processes"
        return f"in-process threads ({self.workers})"


def engine_kind(options: EngineOptions) -> dict:
    """The device type and precision ``options`` resolve to in this process (``auto`` depends on
    the machine), without loading a model: part of a run's ``--resume`` fingerprint."""
    device = resolve_device(options.device)
    return {"device_type": device.type, "precision": resolve_precision(options.precision, device)}


def task_name(units: tuple[Unit, ...]) -> str:
    """A readable, unique key: the first block of the task and how many units it holds."""
    first = "-".join(map(str, units[0].block_indices[0]))
    return f"task-{first}-{len(units)}u"


class ThreadRunner:
    """Tasks on Dask's threaded scheduler in this process. Strips are not cut for threads: they
    share one model, so more tasks would only recompute the tiles on the cuts."""

    dashboard = None
    split = False

    def __init__(self, workers: int):
        self.slots = workers

    def engine_kind(self, options: EngineOptions) -> dict:
        return engine_kind(options)

    def run(self, ctx: RunContext, tasks: list[tuple[Unit, ...]],
            on_report: Callable[[BlockReport], None] | None = None, stop: Stop | None = None) -> list[BlockReport]:
        stop = stop or Stop()

        def task(units: tuple[Unit, ...]) -> list[BlockReport]:
            return [] if stop.requested else process_task(ctx, units)

        delayed = [dask.delayed(task, pure=False)(units, dask_key_name=task_name(units)) for units in tasks]
        heard, lock = set(), threading.Lock()

        def stored(report: BlockReport) -> None:  # from the task threads, as each block is stored
            with lock:
                heard.add(report.index)
                if on_report:
                    on_report(report)
            stop.check()  # the task ends here, its next blocks left unstored

        with block_listener(ctx.run_id, stored), dask.config.set(scheduler="threads", num_workers=self.slots):
            reports = [report for result in dask.compute(*delayed) for report in result]
        for report in reports:  # failed blocks were never stored
            if on_report and report.index not in heard:
                on_report(report)
        return reports


class DistributedRunner:
    """Tasks as futures on a dask.distributed client; a GPU resource is requested when the
    workers declare one. Strips are cut so that every slot gets at least two tasks."""

    split = True

    def __init__(self, client):
        self.client = client
        self.dashboard = client.dashboard_link
        workers = client.scheduler_info()["workers"].values()
        gpus = sum(w.get("resources", {}).get("GPU", 0) for w in workers)
        self.resources = {"GPU": 1} if gpus else None
        self.slots = int(gpus) if gpus else sum(w.get("nthreads", 1) for w in workers)

    def engine_kind(self, options: EngineOptions) -> dict:
        """As the workers resolve it (asked of each; none loads a model). Workers that disagree,
        say GPU and CPU workers on one scheduler, give every kind they resolve to, joined by "+"."""
        kinds = list(self.client.run(engine_kind, options).values())
        return {key: "+".join(sorted({kind[key] for kind in kinds})) for key in ("device_type", "precision")}

    def run(self, ctx: RunContext, tasks: list[tuple[Unit, ...]],
            on_report: Callable[[BlockReport], None] | None = None, stop: Stop | None = None) -> list[BlockReport]:
        from distributed import as_completed

        if ctx.store_url.startswith("memory://"):
            raise TilepipeError("a memory:// store lives in this process only; give a path or URL every worker can reach")
        futures = [
            self.client.submit(process_task, ctx, units, key=f"tilepipe-{ctx.run_id}-{task_name(units)}",
                               resources=self.resources, pure=False)
            for units in tasks
        ]
        if stop is not None:
            stop.on_request(lambda: self.client.cancel(futures))
        reports = []
        for future in as_completed(futures):
            if future.cancelled():  # stopped before it ran; what it stored is in the store's records
                continue
            for report in future.result():
                reports.append(report)
                if on_report:
                    on_report(report)
        return reports


def worker_environment() -> dict[str, str]:
    """What the processes of a LocalCluster tilepipe starts need set before they start: GDAL's
    block cache is per process and sized from GDAL_CACHEMAX (in MB) at its first use (see
    :func:`tilepipe.sources.geotiff.bounded_gdal_cache`); a value the caller set is inherited."""
    return {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": str(GDAL_CACHE_MB)}


def restore_environ(saved: dict[str, str]) -> None:
    """Undo, key by key, what was written into ``os.environ`` since ``saved`` was taken: keys added
    are removed, keys changed or removed get their old value back. Only those keys are touched:
    clearing the whole mapping and refilling it would leave, for a moment, an empty environment
    for any other thread of the caller's process reading it (GDAL, OpenMP and the like do)."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextmanager
def runner(scheduling: Scheduling):
    """The runner for ``scheduling``, with any cluster it starts up before and torn down after,
    so that start-up counts as setup and never as block time."""
    if not scheduling.distributed:
        yield ThreadRunner(scheduling.workers)
        return
    from distributed import Client, LocalCluster

    cluster = None
    if scheduling.cluster:
        saved = dict(os.environ)  # LocalCluster exports OMP_NUM_THREADS=1 & co. into this process
        try:
            cluster = LocalCluster(n_workers=scheduling.local_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", env=worker_environment())
        finally:
            restore_environ(saved)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduling.scheduler)  # waits dask's distributed.comm.timeouts.connect
        except (OSError, TimeoutError) as exc:
            raise TilepipeError(f"--scheduler {scheduling.scheduler}: cannot connect ({exc})") from None
    try:
        yield DistributedRunner(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
