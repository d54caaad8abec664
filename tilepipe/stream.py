"""A task's units as one stream of tiles: read a few tile rows at a time, batch, blend, write.

A unit (a run of blocks of one strip, see :mod:`tilepipe.partition`) is read a few lattice tile rows
at a time (one windowed read, ahead of need, in the reader pool); the tiles of all the task's
units form one stream cut into batches of the engine's batch size, so slices of a stack share
forward passes. Tiles are blended in lattice order into the unit's open rows; once a tile row is
in, the rows above the next one are final, and each block is written, then recorded, as soon as
its last row is: a crash loses the blocks in progress only. Tiles are cut along :mod:`tilepipe.grid`,
batches run in :mod:`tilepipe.engine`, blending is :mod:`tilepipe.stitch`, chunks are written by :mod:`tilepipe.sink`.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Callable

import numpy as np

from .errors import fault_line
from .grid import Unit, Window, block_index
from .partition import Plan
from .retry import is_transient
from .sink import MaskStore
from .sources.scaling import plane_scaling
from .stitch import SpareAccumulators, StripStitcher, accumulator_bytes

PREFETCH = 2
"""Batches cut, scaled and on their way to the device while the network runs the current one."""
TIMERS_BEHIND = 4
"""Forward passes whose device seconds are read this many passes later (the engine queues them)."""
STITCH_BEHIND = 1
"""Batches the stitch lane may still be blending while the network runs the next one."""
READ_AHEAD = 1
"""Reads (of a few tile rows each) done ahead of the batches being formed."""
READ_BYTES = 16 * 2**20
"""About the most one read holds: a few tile rows of a strip at once, at most ``MAX_ROWS_PER_READ``."""
MAX_ROWS_PER_READ = 4


def rows_per_read(plan: Plan, source) -> int:
    """Tile rows read in one window: as many as fit ``READ_BYTES`` (pixels and validity)."""
    per_pixel = len(source.bands) * np.dtype(source.dtype).itemsize + 1
    width = min(plan.strip_width, plan.width) + 2 * plan.tile_width
    fits = (READ_BYTES / (width * per_pixel) - plan.tile_height) // plan.grid.stride + 1
    return int(max(1, min(MAX_ROWS_PER_READ, fits)))


def held_bytes(plan: Plan, num_classes: int, input_bytes_per_pixel: int) -> tuple[int, int]:
    """What one task's stream holds besides the forward pass that is running, in bytes, as
    ``(fixed, per tile of a batch)``. Fixed: the accumulators of the one unit it blends (its units
    are blended in turn and pass them on). Per tile: the batches cut and uploaded ahead
    (``PREFETCH``, and the one the network takes next) and the probabilities the stitch lane has
    not blended yet (``STITCH_BEHIND`` batches; the running pass's own output is the engine's to
    count). On a CPU all of it is host memory; on CUDA the accumulators, the uploaded tiles and
    the probabilities are on the device."""
    fixed = accumulator_bytes(num_classes, plan.tile_height, min(plan.strip_width, plan.width))
    tile_px = plan.tile_height * plan.tile_width
    return fixed, tile_px * ((PREFETCH + 1) * (input_bytes_per_pixel + 1) + STITCH_BEHIND * num_classes * 4)


def tile_pixels(cuts: list[tuple[np.ndarray, np.ndarray, Window, Window]]) -> tuple[np.ndarray, np.ndarray]:
    """Cut tiles out of reads, unscaled, into one batch: each cut is ``(pixels, valid, read window,
    tile)``, and a batch may span the reads of several tile rows. Returns ((N, bands, h, w) in the
    source dtype, (N, h, w) bool), each stacked once."""
    slices = [(pixels, valid, tile.relative_to(read)) for pixels, valid, read, tile in cuts]
    return (np.stack([pixels[:, rows, cols] for pixels, _, (rows, cols) in slices]),
            np.stack([valid[rows, cols] for _, valid, (rows, cols) in slices]))


def network_input(raw: np.ndarray, scaling, channels: int = 3) -> np.ndarray:
    """Scale a batch of raw tiles for the network: (N, channels, h, w) float32. A one-band image
    is replicated when the network takes more channels (3)."""
    images = scaling.apply(raw)  # per-band terms broadcast over the batch axis
    return np.repeat(images, channels, axis=1) if images.shape[1] == 1 and channels > 1 else images


def scaled_runs(raw: np.ndarray, scalings: list, channels: int) -> np.ndarray:
    """:func:`network_input` of a batch whose tiles may come from volumes scaled apart (a 4-D
    DICOM series windows each volume on its own): each run of tiles sharing a scaling is scaled
    with it."""
    out, start = [], 0
    for scaling, run in groupby(scalings):
        count = len(list(run))
        out.append(network_input(raw[start:start + count], scaling, channels))
        start += count
    return out[0] if len(out) == 1 else np.concatenate(out)


@dataclass
class _Row:
    """One tile row of a unit: its read, the tiles with a valid pixel, how many are still out."""

    unit: _UnitRun
    position: int
    window: Window
    pixels: np.ndarray | None = None
    valid: np.ndarray | None = None
    tiles: list[Window] = field(default_factory=list)
    left: int = 0
    error: Exception | None = None
    trace: str = ""


class _UnitRun:
    """A unit in progress: its stitcher, rows in flight and final rows not yet a whole block. The
    stitcher holds its buffers only from the unit's first open row to its last, so a task of many
    units holds those of the units it is blending, not of all it was given."""

    def __init__(self, ctx, unit: Unit, reports: dict, store: MaskStore, num_classes: int, device,
                 spares: SpareAccumulators, stored: Callable | None = None):
        self.ctx, self.unit, self.reports, self.store, self.stored = ctx, unit, reports, store, stored
        self.stitcher = StripStitcher(unit.core, num_classes, ctx.blending, device, ctx.plan.tile_height, spares)
        self.in_flight: deque[_Row] = deque()
        self.next_band = unit.band_start
        self.done: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []  # final rows, in order
        self.failed = False
        self.clock = time.time()  # when the unit's next block began: for the run's timeline

    def home(self, row: int):
        """The report a tile row's work is counted in: the block holding its first row in the unit."""
        band = max(row, self.unit.core.row) // self.ctx.plan.chunk_size
        return self.reports[block_index(self.unit.plane, band, self.unit.strip)]

    def settle(self) -> None:
        """Blend out the rows whose tiles are all in (rows finish in order), write whole blocks."""
        while self.in_flight and self.in_flight[0].left == 0 and not self.failed:
            row = self.in_flight.popleft()
            if row.error is not None:  # the rows above are written: only the blocks from here on fail
                self.fail(row.error, row.trace)
                return
            stop = self.unit.final_rows(row.position)
            top = self.stitcher.top
            report = self.home(top)
            if stop > top:
                rows = slice(top - row.window.row, stop - row.window.row)
                valid = row.valid[rows, self.unit.core.relative_to(row.window)[1]]
                with report.stage("stitch"):
                    labels, probs = self.stitcher.finish(stop, valid, self.ctx.probabilities)
                self.done.append((labels, probs, valid))
            row.pixels = row.valid = None
            self._write_ready()

    def _write_ready(self) -> None:
        plan = self.ctx.plan
        while self.next_band < self.unit.band_stop:
            block = plan.block(block_index(self.unit.plane, self.next_band, self.unit.strip))
            have = sum(len(labels) for labels, _, _ in self.done)
            if have < block.core.height:
                return
            labels, probs, valid = (None if part[0] is None else np.concatenate(part, axis=axis)
                                    for part, axis in zip(zip(*self.done), (0, 1, 0)))
            h = block.core.height
            report = self.reports[block.index]
            rest = [(labels[h:], None if probs is None else probs[:, h:], valid[h:])] if len(labels) > h else []
            report.no_data = not valid[:h].any()
            with report.stage("write"):
                try:
                    if report.no_data:  # its chunks keep the fill value, NO_LABEL: only the record
                        self.store.write_block(block, None)
                    else:
                        self.store.write_block(block, labels[:h], None if probs is None else probs[:, :h])
                except OSError as exc:  # still failing after its retries: this block fails, the unit goes on
                    if not is_transient(exc):
                        raise
                    report.error, report.traceback = fault_line(exc), traceback.format_exc()
            report.started, report.finished = self.clock, time.time()
            self.clock = report.finished
            self.done = rest
            self.next_band += 1
            if self.stored and report.error is None:
                self.stored(report)

    def fail(self, exc: Exception, trace: str) -> None:
        """Every block of the unit not written yet fails with ``exc``; the written ones stay done."""
        self.failed = True
        self.stitcher.release()
        for band in range(self.next_band, self.unit.band_stop):
            report = self.reports[block_index(self.unit.plane, band, self.unit.strip)]
            report.error, report.traceback = fault_line(exc), trace
        self.in_flight.clear()


class TaskStream:
    """One task's units as a single stream of tiles: reads ahead in ``pool``, batches across units,
    blends in lattice order, writes each block when final and calls ``stored`` with its report."""

    def __init__(self, ctx, engine, store: MaskStore, source, reports: dict, pool: ThreadPoolExecutor,
                 stored: Callable | None = None):
        self.ctx, self.engine, self.source, self.reports = ctx, engine, source, reports
        self.store, self.pool, self.stored = store, pool, stored
        self.on_device = engine.scales_on_device(source.dtype)
        # tiles go to the network raw (scaled on the device) or scaled, as float32 channels
        per_pixel = (len(source.bands) * np.dtype(source.dtype).itemsize if self.on_device
                     else engine.model.in_channels * 4)
        held = held_bytes(ctx.plan, engine.model.num_classes, per_pixel)
        self.size = engine.batch_size_for(ctx.plan.tile_height, ctx.plan.tile_width, *held)
        self.lock = threading.Lock()

    def read(self, rows: list[_Row]) -> list[_Row]:
        """Read consecutive tile rows of one unit in one window (in the reader pool), so the
        source's blocks or frames under two overlapping tile rows are mostly decoded once. A
        failure is kept for the unit, not raised."""
        unit = rows[0].unit
        first, last = rows[0].window, rows[-1].window
        window = Window(first.row, first.col, last.row_stop - first.row, first.width)
        report = unit.home(first.row)
        start = time.perf_counter()
        try:
            pixels, valid = self.source.read(window, unit.unit.plane)
        except Exception as exc:  # an unreadable strip fails its unit only, from the first bad tile row on
            if len(rows) > 1:
                return [row for single in rows for row in self.read([single])]
            rows[0].error, rows[0].trace = exc, traceback.format_exc()
            return rows
        for row in rows:
            cut = slice(row.window.row - window.row, row.window.row_stop - window.row)
            row.pixels, row.valid = pixels[:, cut], valid[cut]
            row.tiles = [t for t in unit.unit.row_tiles(row.window.row) if row.valid[t.relative_to(row.window)].any()]
            row.left = len(row.tiles)
        seconds = time.perf_counter() - start
        with self.lock:  # reads of one task run in several reader threads
            report.seconds["read"] += seconds
            report.read_pixels += window.area
            report.largest_read_pixels = max(report.largest_read_pixels, window.area)
            for row in rows:
                home = unit.home(row.window.row)
                home.tiles += len(row.tiles)
                home.tiles_skipped += len(unit.unit.tile_cols) - len(row.tiles)
        return rows

    def prepare(self, batch: list[tuple[_Row, Window]]):
        """Cut, scale and upload one batch (in the reader pool); returns it with its seconds."""
        start = time.perf_counter()
        images, masks = tile_pixels([(row.pixels, row.valid, row.window, tile) for row, tile in batch])
        scalings = [plane_scaling(self.source, row.unit.unit.plane) for row, _ in batch]
        if self.on_device and len(set(scalings)) == 1:  # raw tiles go up (a quarter of the bytes for uint8)
            uploaded = self.engine.upload(images, masks, scalings[0])
        else:  # on the host: a CPU, or a batch that spans volumes windowed apart
            uploaded = self.engine.upload(scaled_runs(images, scalings, self.engine.model.in_channels), masks)
        return uploaded, time.perf_counter() - start

    @staticmethod
    def _arrive(group: list[_Row]) -> None:
        """The rows of a read join their units, in order (a read error fails the unit in turn)."""
        for row in group:
            if not row.unit.failed:
                row.unit.in_flight.append(row)
                row.unit.settle()  # a row without a valid tile is final at once

    @staticmethod
    def _blend(batch: list[tuple[_Row, Window]], prediction, home) -> None:
        """In the stitch lane: the probabilities are taken here, in the thread that uses them
        (:meth:`tilepipe.engine.Prediction.take`)."""
        for (row, tile), probs in zip(batch, prediction.take()):
            if row.unit.failed:
                continue
            with home.stage("stitch"):
                row.unit.stitcher.add(tile, probs)
            row.left -= 1
            if row.left == 0:
                row.unit.settle()  # times its own blending and writing

    def run(self, units: tuple[Unit, ...]) -> None:
        """Feed the network from this thread; blend and write in the task's stitch lane, a thread
        that takes the rows and batches in order (lattice order) while the next batch runs."""
        spares = SpareAccumulators()  # the task's units are blended in turn: each leaves its buffers to the next
        runs = [_UnitRun(self.ctx, u, self.reports, self.store, self.engine.model.num_classes, self.engine.device,
                         spares, self.stored) for u in units]
        per_read = rows_per_read(self.ctx.plan, self.source)
        groups = iter([[_Row(r, k, r.unit.row_window(r.unit.tile_rows[k]))
                        for k in range(start, min(start + per_read, len(r.unit.tile_rows)))]
                       for r in runs for start in range(0, len(r.unit.tile_rows), per_read)])
        reads: deque = deque()
        tiles: deque[tuple[_Row, Window]] = deque()
        batches: deque = deque()
        timers: deque = deque()
        lane, blending = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tilepipe-stitch"), deque()

        def read_ahead():
            while len(reads) < READ_AHEAD and (group := next(groups, None)) is not None:
                reads.append(self.pool.submit(self.read, group))

        def in_lane(fn, *args):
            blending.append(lane.submit(fn, *args))
            while len(blending) > STITCH_BEHIND or (blending and blending[0].done()):
                blending.popleft().result()  # raises what the lane raised

        try:
            read_ahead()
            while True:
                while len(batches) < PREFETCH:
                    while len(tiles) < self.size and reads:
                        group = reads.popleft().result()
                        read_ahead()
                        tiles.extend((row, t) for row in group if not row.unit.failed for t in row.tiles)
                        in_lane(self._arrive, group)
                    if not tiles:
                        break
                    batch = [tiles.popleft() for _ in range(min(self.size, len(tiles)))]
                    batches.append((batch, self.pool.submit(self.prepare, batch)))
                if not batches:
                    break
                batch, future = batches.popleft()
                uploaded, seconds = future.result()
                home = batch[0][0].unit.home(batch[0][0].window.row)
                home.seconds["preprocess"] += seconds
                prediction = self.engine.queue(uploaded)
                timers.append((home, prediction.timer))
                if len(timers) > TIMERS_BEHIND:  # on CUDA a pass is only queued: read its seconds later
                    done, oldest = timers.popleft()
                    done.seconds["forward"] += oldest.seconds
                home.forward_calls += 1
                in_lane(self._blend, batch, prediction, home)
                # the lane holds the prediction now: kept here too, its probabilities would outlive
                # their blending by a whole forward pass (the next one, or another task's)
                del prediction, uploaded
            while blending:
                blending.popleft().result()
        finally:
            lane.shutdown(wait=True)
        for done, timer in timers:
            done.seconds["forward"] += timer.seconds
        for r in runs:
            if not r.failed and r.next_band < r.unit.band_stop:
                r.fail(RuntimeError("the unit ended before all its blocks were written"), "")
