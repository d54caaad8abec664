"""One task, start to finish: open what it needs, stream its units, report every block.

This is the body of every Dask task. It receives a :class:`RunContext` (plain, picklable values)
and a tuple of :class:`~tilepipe.grid.Unit`, and opens the source, the model and the store through
per-process caches, so the same function runs in a thread of this process or on a remote worker.
The streaming itself (reads, batches, blending, writing blocks as they close) is
:mod:`tilepipe.stream`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from .engine import EngineOptions, cached_engine
from .errors import fault_line
from .grid import Unit
from .partition import Plan
from .model import ModelSpec
from .sink import MaskStore
from .sizing import reader_threads
from .sources import SourceSpec, open_source
from .stopping import Stopped
from .stream import TaskStream

STAGES = ("read", "preprocess", "forward", "stitch", "write")


@dataclass(frozen=True)
class RunContext:
    """Everything a block task needs, as values that travel to any worker."""

    source: SourceSpec
    model: ModelSpec
    engine: EngineOptions
    plan: Plan
    store_url: str
    blending: str = "gaussian"
    probabilities: bool = False
    run_id: str = ""
    """Names the run: its store handles and sources are cached under it, and its blocks write
    only while the store names this run."""


@dataclass
class BlockReport:
    index: tuple[int, ...]
    core: str
    tiles: int = 0
    tiles_skipped: int = 0
    no_data: bool = False
    read_pixels: int = 0
    largest_read_pixels: int = 0
    forward_calls: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    error: str | None = None
    traceback: str | None = field(default=None, repr=False)
    worker: str = ""
    """``host:pid`` of the process that ran the block."""
    thread: str = ""
    """The thread of that process whose task ran the block (a lane of the run's timeline)."""
    started: float = 0.0
    """Wall-clock time (``time.time()``, comparable across machines) when the block's work began:
    its task's start, or when the block before it in its unit was written."""
    finished: float = 0.0
    """Wall-clock time when the block was written (0 if it never was)."""
    engine: dict | None = None
    """The engine as it ran this block (device, precision, batch size, tactics): the summary
    reports what the workers did, not what the client would have done."""
    retries: int = 0
    """Writes of this block tried again after a transient storage error (:mod:`tilepipe.retry`)."""

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


_block_listeners: dict[str, Callable[[BlockReport], None]] = {}


@contextmanager
def block_listener(run_id: str, callback: Callable[[BlockReport], None]):
    """Call ``callback`` with each block's report as soon as the block is stored, from the task
    that stored it, for tasks of run ``run_id`` in this process (the in-process progress line;
    a distributed run hears of its blocks when their task returns)."""
    _block_listeners[run_id] = callback
    try:
        yield
    finally:
        _block_listeners.pop(run_id, None)


@lru_cache(maxsize=1)
def _reader_pool(threads: int) -> ThreadPoolExecutor:
    """One pool per process, shared by all tasks: threads created once, not per task (every new
    thread can get a fresh malloc arena, and RSS then grows with the task count)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tilepipe-reader")


@lru_cache(maxsize=4)
def _open_store(url: str, run_id: str) -> MaskStore:
    """One handle per store and run in each process: a new run never writes through an earlier
    run's handle, whose arrays may have had another shape or chunking."""
    return MaskStore.open(url, mode="r+", run_id=run_id)


def fail_unrecorded(reports, done, line: str, trace: str) -> None:
    """Fail with ``line`` every report of a block the store has not recorded done (``done``, the
    store's records; None: none could be read): what a task that broke off leaves to ``--resume``."""
    for report in reports:
        if report.error is None and (done is None or not done[report.index]):
            report.error, report.traceback = line, trace


def process_task(ctx: RunContext, units: tuple[Unit, ...]) -> list[BlockReport]:
    """Run one task's units; a failure is reported per block (with its window), never raised.
    Blocks written before a failure stay written and recorded. A task stopped (a block's report
    raised :class:`~tilepipe.stopping.Stopped`) reports only the blocks it stored."""
    plan = ctx.plan
    worker = f"{socket.gethostname()}:{os.getpid()}"
    thread = threading.current_thread().name
    reports = {i: BlockReport(index=i, core=str(plan.block(i).core), worker=worker, thread=thread)
               for u in units for i in u.block_indices}
    engine = store = None
    first = next(iter(reports.values()))
    try:
        # every second of the task belongs to a stage, opening included (cached after a worker's first task)
        with first.stage("forward"):
            engine = cached_engine(ctx.model, ctx.engine)
            engine.busy_clock.begin_run(ctx.run_id)  # the GPU busy fraction a block reports is its run's
        with first.stage("write"):
            store = _open_store(ctx.store_url, ctx.run_id)
        with first.stage("read"):
            source = open_source(ctx.source, ctx.run_id)
        pool = _reader_pool(reader_threads(engine.device.type))
        TaskStream(ctx, engine, store, source, reports, pool, _block_listeners.get(ctx.run_id)).run(units)
    except Stopped:
        reports = {index: report for index, report in reports.items() if report.finished or report.error}
    except Exception as exc:  # reported per block: the run goes on and ends non-zero
        fail_unrecorded(reports.values(), store.done_blocks() if store is not None else None, fault_line(exc),
                        traceback.format_exc())
    finally:
        described = engine.describe() if engine is not None else None
        for index, report in reports.items():
            report.engine = described
            if store is not None:  # the handle's other retries (its owner checks) go with the first block
                report.retries = store.retries.take(index) + (store.retries.take() if report is first else 0)
    return list(reports.values())
