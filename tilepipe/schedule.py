"""Turning the plan into Dask tasks (one per block) and running them where the user asked.

* in-process (default): Dask's threaded scheduler runs ``workers`` block tasks at once, so reading
  and writing of some blocks overlaps the forward pass of another while the one model (loaded
  once) serialises its batches;
* ``cluster="local:N"``: a ``distributed.LocalCluster`` of N single-threaded worker processes,
  started for this run and torn down at its end;
* ``scheduler="tcp://host:8786"``: an existing ``dask.distributed`` cluster (``dask scheduler`` /
  ``dask worker``, dask-jobqueue, dask-kubernetes). tilepipe connects and never shuts it down.

Tasks carry a :class:`RunContext` and a block index, never open files or models: each worker
process opens the source and loads the model once (per-process caches in :mod:`tilepipe.blocks`).
When workers declare a ``GPU`` resource (``dask worker --resources GPU=1``), every block task asks
for one unit of it, so each GPU runs one block (one model) at a time. A worker that dies mid-task
is handled by Dask, which runs its blocks elsewhere; a block that fails for a data reason comes
back as a report with its error, and the other blocks go on.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable

import dask
from dask.callbacks import Callback

from .blocks import BlockReport, RunContext, process_block
from .engine import EngineOptions, resolve_device, resolve_precision
from .errors import TilepipeError


@dataclass(frozen=True)
class Scheduling:
    workers: int = 2
    cluster: str | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.cluster and self.scheduler:
            raise TilepipeError("give either --cluster or --scheduler, not both")
        if self.workers < 1:
            raise TilepipeError(f"--workers {self.workers} must be at least 1")
        if self.cluster is not None:
            self.local_workers  # validates

    @property
    def distributed(self) -> bool:
        return bool(self.cluster or self.scheduler)

    @property
    def local_workers(self) -> int:
        kind, _, count = self.cluster.partition(":")
        if kind != "local" or not count.isdigit() or int(count) < 1:
            raise TilepipeError(f"--cluster {self.cluster!r}: expected local:N, e.g. local:4")
        return int(count)

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


class _Progress(Callback):
    def __init__(self, on_report: Callable[[BlockReport], None]):
        super().__init__()
        self.on_report = on_report

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(result, BlockReport):
            self.on_report(result)


class ThreadRunner:
    """Block tasks on Dask's threaded scheduler in this process."""

    dashboard = None

    def __init__(self, workers: int):
        self.slots = workers

    def engine_kind(self, options: EngineOptions) -> dict:
        return engine_kind(options)

    def run(self, ctx: RunContext, indices: list[tuple[int, ...]],
            on_report: Callable[[BlockReport], None] | None = None) -> list[BlockReport]:
        tasks = [
            dask.delayed(process_block, pure=False)(ctx, index, dask_key_name=f"block-{'-'.join(map(str, index))}")
            for index in indices
        ]
        progress = _Progress(on_report) if on_report else nullcontext()
        with progress, dask.config.set(scheduler="threads", num_workers=self.slots):
            return list(dask.compute(*tasks))


class DistributedRunner:
    """Block tasks as futures on a dask.distributed client; a GPU resource is requested when the
    workers declare one."""

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

    def run(self, ctx: RunContext, indices: list[tuple[int, ...]],
            on_report: Callable[[BlockReport], None] | None = None) -> list[BlockReport]:
        from distributed import as_completed

        if ctx.store_url.startswith("memory://"):
            raise TilepipeError("a memory:// store lives in this process only; give a path or URL every worker can reach")
        futures = [
            self.client.submit(process_block, ctx, index, key=f"tilepipe-{ctx.run_id}-block-{'-'.join(map(str, index))}",
                               resources=self.resources, pure=False)
            for index in indices
        ]
        reports = []
        for future in as_completed(futures):
            reports.append(future.result())
            if on_report:
                on_report(reports[-1])
        return reports


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
                                   dashboard_address=":0")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduling.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise TilepipeError(f"--scheduler {scheduling.scheduler}: cannot connect ({exc})") from None
    try:
        yield DistributedRunner(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
