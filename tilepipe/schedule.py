"""Turning the plan into Dask tasks (units of strips, see :mod:`tilepipe.partition`) and running them.

* in-process (default): Dask's threaded scheduler runs ``workers`` block tasks at once, so reading
  and writing of some blocks overlaps the forward pass of another while the one model (loaded
  once) serialises its batches;
* ``cluster="local:N"``: a ``distributed.LocalCluster`` of N single-threaded worker processes,
  started for this run and torn down at its end; on a GPU host each is pinned to one GPU
  (:mod:`tilepipe.local_cluster`), and ``local`` alone starts one per GPU;
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
the same bytes); a task whose workers keep dying is given up (``KilledWorker``) and its unrecorded
blocks fail, and a block that fails for a data reason comes back as a report with its error: either
way the other tasks' reports are still collected, as each task ends, and the run ends non-zero.

A stop (:mod:`tilepipe.stopping`) starts no new task; in this process a running task stops after
the block it is writing, and on a cluster the client cancels the futures not yet done. Blocks not
stored are then simply absent from the reports: ``--resume`` runs them.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import dask

from .blocks import BlockReport, RunContext, block_listener, fail_unrecorded, process_task
from .device import resolve_device, resolve_precision
from .engine_options import EngineOptions
from .errors import TilepipeError, fault_line
from .grid import Unit
from .option_grammars import local_cluster_workers
from .sink import MaskStore
from .sizing import LARGE_ALLOCATION
from .sources.geotiff import GDAL_CACHE_MB
from .stopping import Stop


@dataclass(frozen=True)
class Scheduling:
    """Where the tasks run: ``workers`` threads here, a LocalCluster, or an existing scheduler."""

    workers: int
    cluster: str | None = None
    scheduler: str | None = None
    device: str = "auto"
    """The run's ``--device``: a LocalCluster pins its workers to GPUs for ``auto`` and ``cuda``."""

    def __post_init__(self) -> None:
        # each value was read by its option's parser; what no single option can check is here
        if self.cluster and self.scheduler:
            raise TilepipeError("give either --cluster or --scheduler, not both")

    @property
    def distributed(self) -> bool:
        return bool(self.cluster or self.scheduler)

    def worker_pins(self) -> list[dict]:
        """Per worker process of the LocalCluster, what pins it to a GPU (see :mod:`tilepipe.local_cluster`)."""
        from .local_cluster import gpus_to_pin, worker_pins

        return worker_pins(local_cluster_workers(self.cluster), gpus_to_pin(self.device))

    def describe(self) -> str:
        if self.scheduler:
            return f"dask.distributed at {self.scheduler}"
        if self.cluster:
            pins = self.worker_pins()
            gpus = sorted({pin["env"]["CUDA_VISIBLE_DEVICES"] for pin in pins if pin})
            pinned = f", each pinned to one GPU of {', '.join(gpus)}" if gpus else ""
            return f"dask.distributed LocalCluster of {len(pins)} worker processes{pinned}"
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
        futures = {
            self.client.submit(process_task, ctx, units, key=f"tilepipe-{ctx.run_id}-{task_name(units)}",
                               resources=self.resources, pure=False): units
            for units in tasks
        }
        forget = stop.on_request(lambda: self.client.cancel(list(futures))) if stop is not None else None
        reports = []
        try:
            for future in as_completed(futures):  # each task as it ends, in whatever order
                if future.cancelled():  # stopped before it ran; what it stored is in the store's records
                    continue
                if future.status == "error":
                    task_reports = lost_task_reports(ctx, futures[future], future.exception())
                else:
                    task_reports = future.result()
                for report in task_reports:
                    reports.append(report)
                    if on_report:
                        on_report(report)
        finally:
            if forget:
                forget()
        return reports


def lost_task_reports(ctx: RunContext, units: tuple[Unit, ...], exc: BaseException) -> list[BlockReport]:
    """The reports of a task that never returned its own: Dask gave up on it, most often with
    ``KilledWorker`` (its worker process died ``distributed.scheduler.allowed-failures`` + 1
    times while running it: out of memory, a crashing library, a lost host). The blocks the task
    recorded before that stay done (their reports, timings included, died with the worker); the
    others fail with one line, and the run goes on collecting every other task's reports."""
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        last = getattr(exc.last_worker, "address", exc.last_worker)
        line = (f"its worker process died while running it, {exc.allowed_failures + 1} time(s) on different "
                f"workers (dask KilledWorker; last on {last}): see the workers' logs")
    else:
        line = fault_line(exc)
    reports = [BlockReport(index=i, core=str(ctx.plan.block(i).core)) for unit in units for i in unit.block_indices]
    fail_unrecorded(reports, MaskStore.open(ctx.store_url).done_blocks(), line, str(exc))
    return reports


def worker_environment() -> dict[str, str]:
    """What the processes of a LocalCluster tilepipe starts need set before they start: GDAL's
    block cache is per process and sized from GDAL_CACHEMAX (in MB) at its first use (see
    :func:`tilepipe.sources.geotiff.bounded_gdal_cache`), and glibc reads its mmap threshold at
    start-up (the workers decode and blend, so they need what :func:`tilepipe.sizing.return_large_frees`
    does for an in-process run). A value the caller set is inherited."""
    wanted = {"GDAL_CACHEMAX": str(GDAL_CACHE_MB), "MALLOC_MMAP_THRESHOLD_": str(LARGE_ALLOCATION)}
    return {key: value for key, value in wanted.items() if key not in os.environ}


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
def sigint_ignored():
    """SIGINT ignored while inside, then the previous handler back. Processes started meanwhile
    inherit the ignored signal, and Python keeps it ignored at their start: a LocalCluster's
    workers so started (distributed installs no SIGINT handler in them) outlive a terminal's
    Ctrl-C, which goes to the whole process group, and finish their blocks while the client stops
    the run. Only the main thread may set handlers; from another, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def runner(scheduling: Scheduling):
    """The runner for ``scheduling``, with any cluster it starts up before and torn down after,
    so that start-up counts as setup and never as block time."""
    if not scheduling.distributed:
        yield ThreadRunner(scheduling.workers)
        return
    from distributed import Client

    cluster = None
    if scheduling.cluster:
        from .local_cluster import PinnedLocalCluster

        pins = scheduling.worker_pins()
        saved = dict(os.environ)  # LocalCluster exports OMP_NUM_THREADS=1 & co. into this process
        try:
            with sigint_ignored():  # only the client decides to stop (tilepipe.stopping)
                cluster = PinnedLocalCluster(pins, env=worker_environment())
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
