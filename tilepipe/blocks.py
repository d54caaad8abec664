"""One block, start to finish: read its window, cut its tiles, run them, blend, write its chunks.

This is the body of every Dask task. It receives a :class:`RunContext` (plain, picklable values)
and a block index, and opens the source, the model and the store through per-process caches, so
the same function runs in a thread of this process or on a remote worker.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .engine import EngineOptions, cached_engine
from .errors import TilepipeError
from .grid import Plan, Window
from .model import ModelSpec
from .sink import MaskStore
from .sources import SourceSpec, open_source
from .stitch import BlockStitcher

STAGES = ("read", "preprocess", "forward", "stitch", "write")
PREFETCH = 2
READER_THREADS = 4


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
    forward_calls: int = 0
    worker: str = ""
    """``host:pid`` of the process that ran the block."""
    engine: dict | None = None
    """The engine as it ran this block (device, precision, batch size, tactics): the summary
    reports what the workers did, not what the client would have done."""
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    error: str | None = None
    traceback: str | None = field(default=None, repr=False)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


@lru_cache(maxsize=1)
def _reader_pool() -> ThreadPoolExecutor:
    """One pool per process, shared by all block tasks: threads created once, not per block
    (every new thread can get a fresh malloc arena, and RSS then grows with the block count)."""
    return ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="tilepipe-reader")


@lru_cache(maxsize=4)
def _open_store(url: str, run_id: str) -> MaskStore:
    """One handle per store and run in each process: a new run never writes through an earlier
    run's handle, whose arrays may have had another shape or chunking."""
    return MaskStore.open(url, mode="r+", run_id=run_id)


def tile_pixels(pixels: np.ndarray, valid: np.ndarray, read: Window, tiles: list[Window]) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``tiles`` out of a block's read, unscaled: ((N, bands, h, w) in the source dtype, (N, h, w) bool)."""
    cuts = [tile.relative_to(read) for tile in tiles]
    return np.stack([pixels[:, rows, cols] for rows, cols in cuts]), np.stack([valid[rows, cols] for rows, cols in cuts])


def tile_inputs(pixels: np.ndarray, valid: np.ndarray, read: Window, tiles: list[Window], scaling,
                channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``tiles`` out of a block's read and scale them: ((N, channels, h, w) float32, (N, h, w) bool).

    A one-band image is replicated when the network takes ``channels`` = 3."""
    raw, masks = tile_pixels(pixels, valid, read, tiles)
    images = scaling.apply(raw)  # per-band terms broadcast over the batch axis
    return (np.repeat(images, channels, axis=1) if images.shape[1] == 1 else images), masks


def process_block(ctx: RunContext, index: tuple[int, ...]) -> BlockReport:
    """Run one block; a failure is reported (with the block's window), never raised."""
    block = ctx.plan.block(index)
    report = BlockReport(index=tuple(index), core=str(block.core), worker=f"{socket.gethostname()}:{os.getpid()}")
    engine = None
    try:
        # every second of the block belongs to a stage, opening included (cached after a worker's first block)
        with report.stage("forward"):
            engine = cached_engine(ctx.model, ctx.engine)
            engine.busy_clock.begin_run(ctx.run_id)  # the GPU busy fraction a block reports is its run's
        with report.stage("write"):
            store = _open_store(ctx.store_url, ctx.run_id)
        read = block.read_window
        report.read_pixels = read.area
        with report.stage("read"):
            source = open_source(ctx.source, ctx.run_id)
            pixels, valid = source.read(read, block.plane)
        core_valid = valid[block.core.relative_to(read)]
        if not core_valid.any():  # nothing to segment: the chunks keep the fill value
            report.no_data = True
            with report.stage("write"):
                store.write_block(block, None)  # its chunks keep the fill value, NO_LABEL
            return report
        with report.stage("preprocess"):
            tiles = [t for t in block.tiles if valid[t.relative_to(read)].any()]
        report.tiles, report.tiles_skipped = len(tiles), block.tile_count - len(tiles)
        with report.stage("stitch"):
            stitcher = BlockStitcher(block.core, engine.model.num_classes, ctx.blending, engine.device)
        size = engine.batch_size_for(block.tile_height, block.tile_width)
        batches = [tiles[i:i + size] for i in range(0, len(tiles), size)]

        on_device = engine.scales_on_device(pixels.dtype)

        def prepare(batch):
            start = time.perf_counter()
            if on_device:  # raw tiles: a quarter of the bytes for uint8, scaled by the engine
                images, masks = tile_pixels(pixels, valid, read, batch)
                uploaded = engine.upload(images, masks, source.scaling)
            else:
                images, masks = tile_inputs(pixels, valid, read, batch, source.scaling, engine.model.in_channels)
                uploaded = engine.upload(images, masks)
            return uploaded, time.perf_counter() - start

        # The reader pool keeps PREFETCH batches cut, scaled and on their way to the device while
        # the network runs the current one.
        pool = _reader_pool()
        pending = deque(pool.submit(prepare, b) for b in batches[:PREFETCH])
        timers = []
        for i, batch in enumerate(batches):
            uploaded, seconds = pending.popleft().result()
            report.seconds["preprocess"] += seconds
            if i + PREFETCH < len(batches):
                pending.append(pool.submit(prepare, batches[i + PREFETCH]))
            probabilities, timer = engine.predict(uploaded)
            timers.append(timer)
            report.forward_calls += 1
            with report.stage("stitch"):
                for tile, probs in zip(batch, probabilities):
                    stitcher.add(tile, probs)
        # On CUDA the passes were only queued: their device seconds are read now (waiting for the
        # last pass, not for the device), so the blend below is not charged for the network's tail.
        report.seconds["forward"] += sum(t.seconds for t in timers)
        with report.stage("stitch"):
            labels = stitcher.labels(core_valid)
            probs = stitcher.probabilities() if ctx.probabilities else None
        with report.stage("write"):
            store.write_block(block, labels, probs)
    except Exception as exc:  # reported per block: the run goes on and ends non-zero
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        report.error = first if isinstance(exc, TilepipeError) else f"{type(exc).__name__}: {first}"
        report.traceback = traceback.format_exc()
    finally:
        if engine is not None:
            report.engine = engine.describe()
    return report
