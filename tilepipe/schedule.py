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

import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import dask
from dask.callbacks import Callback

from .blocks import BlockReport, RunContext, process_block
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


class _Progress(Callback):
    def __init__(self, on_report: Callable[[BlockReport], None]):
        super().__init__()
        self.on_report = on_report

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(result, BlockReport):
            self.on_report(result)


def run_blocks(ctx: RunContext, indices: Iterable[tuple[int, ...]], scheduling: Scheduling,
               on_report: Callable[[BlockReport], None] | None = None,
               on_connect: Callable[[str | None], None] | None = None) -> list[BlockReport]:
    """Run the block tasks; returns one report per block. ``on_connect`` receives the dashboard
    link (or None in-process) once the scheduler is ready."""
    indices = list(indices)
    if scheduling.distributed:
        return _run_distributed(ctx, indices, scheduling, on_report, on_connect)
    if on_connect:
        on_connect(None)
    tasks = [
        dask.delayed(process_block, pure=False)(ctx, index, dask_key_name=f"block-{'-'.join(map(str, index))}")
        for index in indices
    ]
    progress = _Progress(on_report) if on_report else nullcontext()
    with progress, dask.config.set(scheduler="threads", num_workers=scheduling.workers):
        return list(dask.compute(*tasks))


def _run_distributed(ctx, indices, scheduling, on_report, on_connect) -> list[BlockReport]:
    from distributed import Client, LocalCluster, as_completed

    if ctx.store_url.startswith("memory://"):
        raise TilepipeError("a memory:// store lives in this process only; give a path or URL every worker can reach")
    if scheduling.cluster:
        cluster = LocalCluster(n_workers=scheduling.local_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    else:
        cluster = None
        try:
            client = Client(scheduling.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise TilepipeError(f"--scheduler {scheduling.scheduler}: cannot connect ({exc})") from None
    try:
        if on_connect:
            on_connect(client.dashboard_link)
        workers = client.scheduler_info()["workers"].values()
        resources = {"GPU": 1} if any("GPU" in w.get("resources", {}) for w in workers) else None
        run_id = uuid.uuid4().hex[:8]
        futures = [
            client.submit(process_block, ctx, index, key=f"tilepipe-{run_id}-block-{'-'.join(map(str, index))}",
                          resources=resources, pure=False)
            for index in indices
        ]
        reports = []
        for future in as_completed(futures):
            report = future.result()
            reports.append(report)
            if on_report:
                on_report(report)
        return reports
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
