"""``<store>.timeline.png``: where a run's wall time went, block by block, worker by worker.

The top panel has one lane per worker thread (a thread of this process, or of a Dask worker) and one
bar per block, from the block's start (its task's start, or when the block before it in its unit
was written) to the moment it was written. Blocks of one task that stream together (several units,
e.g. slices of a stack) overlap in time and share the lane, stacked. The bar is split into the
block's stages (read, preprocess, forward, stitch, write) in proportion to their busy seconds:
stages overlap (the next rows are read and batches prepared while the network runs), so the split
shows shares, not instants. The bottom panel is the engine's busy fraction over time: each block's forward seconds
spread evenly over its span, summed per process (one engine per process), capped at 1 and
averaged over the processes. A network that is fed stays near 1; gaps show it waiting.

matplotlib is a dependency of tilepipe; where it is missing all the same (an install with
``--no-deps``, as on a GPU machine without a package index) the run says so and draws nothing. The figure is drawn on matplotlib's object API, without pyplot's global state.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from typing import Callable

import numpy as np

from ..blocks import STAGES, BlockReport

log = logging.getLogger("tilepipe")

SIZE_INCHES = (12.0, 7.0)
DPI = 100
BINS = 400
STAGE_COLOURS = dict(zip(STAGES, ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f")))
NO_MATPLOTLIB = "no timeline picture: matplotlib is not installed (pip install matplotlib)"


def engine_busy(reports: list[BlockReport], start: float, end: float, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(bin edges in seconds from start, busy fraction per bin)`` of the engines (one per process)."""
    edges = np.linspace(0.0, max(end - start, 1e-9), bins + 1)
    per_process: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(bins))
    for r in reports:
        span = r.finished - r.started
        if span <= 0:
            continue
        rate = r.seconds.get("forward", 0.0) / span
        lo, hi = r.started - start, r.finished - start
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
        per_process[r.worker] += rate * overlap / np.diff(edges)
    if not per_process:
        return edges, np.zeros(bins)
    return edges, np.mean([np.minimum(v, 1.0) for v in per_process.values()], axis=0)


def _lane_names(lanes: list[tuple[str, str]]) -> list[str]:
    """``n: pid thread`` (host too when the run spanned several hosts)."""
    hosts = {worker.split(":", 1)[0] for worker, _ in lanes}
    return [f"{i + 1}: {(worker.split(':', 1)[-1] if len(hosts) == 1 else worker)} {thread}"[-34:]
            for i, (worker, thread) in enumerate(lanes)]


def _stack(blocks: list[BlockReport]) -> dict[int, int]:
    """Row within its lane of each block (by position in ``blocks``, sorted by start): the first row
    free when it starts, so blocks that overlap in time sit one above the other."""
    ends: list[float] = []
    rows = {}
    for k, r in enumerate(blocks):
        row = next((i for i, end in enumerate(ends) if end <= r.started), len(ends))
        if row == len(ends):
            ends.append(r.finished)
        else:
            ends[row] = r.finished
        rows[k] = row
    return rows


def timeline_figure(reports: list[BlockReport]):
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    timed = sorted((r for r in reports if r.finished > r.started), key=lambda r: r.started)
    start, end = timed[0].started, max(r.finished for r in timed)
    workers = list(dict.fromkeys((r.worker, r.thread) for r in timed))
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    lanes, busy_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for lane, key in enumerate(workers):
        mine = [r for r in timed if (r.worker, r.thread) == key]
        rows = _stack(mine)
        height = 0.8 / (max(rows.values()) + 1)
        # one barh call per stage and lane, not per block: a run of thousands of blocks draws in
        # a fraction of a second instead of seconds per input of a batch
        y = np.array([lane - 0.4 + height * (rows[k] + 0.5) for k in range(len(mine))])
        begin = np.array([r.started - start for r in mine])
        span = np.array([r.finished - r.started for r in mine])
        seconds = np.array([[r.seconds.get(stage, 0.0) for stage in STAGES] for r in mine])
        widths = span[:, None] * seconds / np.where(seconds.sum(axis=1) > 0, seconds.sum(axis=1), 1.0)[:, None]
        lefts = begin[:, None] + np.cumsum(widths, axis=1) - widths
        for s, stage in enumerate(STAGES):
            lanes.barh(y, widths[:, s], left=lefts[:, s], height=height, color=STAGE_COLOURS[stage], edgecolor="none")
        lanes.barh(y, span, left=begin, height=height, fill=False, edgecolor="black", linewidth=0.6)
        for k, r in enumerate(mine):
            if span[k] > 0.04 * (end - start) and height > 0.15:
                lanes.text(begin[k] + span[k] / 2, y[k], ",".join(map(str, r.index)), ha="center", va="center",
                           fontsize=7, color="white")
    lanes.set_yticks(range(len(workers)), _lane_names(workers), fontsize=8)
    lanes.invert_yaxis()
    lanes.set_ylabel("worker")
    fig.legend(handles=[Patch(color=c, label=s) for s, c in STAGE_COLOURS.items()], loc="outside lower center",
               fontsize=8, ncols=len(STAGES), title="stage share of each block's busy time", title_fontsize=8)
    edges, busy = engine_busy(timed, start, end)
    busy_ax.stairs(busy, edges, fill=True, color=STAGE_COLOURS["forward"], alpha=0.6)
    forward = sum(r.seconds.get("forward", 0.0) for r in timed)
    mean = float(np.sum(busy * np.diff(edges)) / (end - start)) if end > start else 0.0
    busy_ax.axhline(mean, color="black", linestyle="--", linewidth=0.8)
    busy_ax.set_ylim(0, 1.05)
    busy_ax.set_ylabel("engine busy")
    busy_ax.set_xlabel("seconds since the first block started")
    gpu = [r.engine["gpu_busy_fraction"] for r in timed if r.engine and r.engine.get("gpu_busy_fraction") is not None]
    measured = f"; the GPU's own clock: busy {np.mean(gpu):.0%}" if gpu else ""
    fig.suptitle(f"{len(timed)} block(s) on {len(workers)} worker thread(s): engine busy {mean:.0%} of "
                 f"{end - start:.1f} s ({forward:.1f} s forward){measured}", fontsize=10)
    return fig


def write_timeline(reports: list[BlockReport], write: Callable[[bytes], str]) -> tuple[str | None, str | None]:
    """Draw the timeline of ``reports`` and hand the PNG's bytes to ``write`` (which stores them and
    returns where): ``(path, None)``, or ``(None, why)`` when matplotlib is missing (also logged)
    or no block ran."""
    if not any(r.finished > r.started for r in reports):
        return None, "no timeline picture: no block ran in this run"
    try:
        figure = timeline_figure(reports)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "matplotlib":
            raise
        log.warning(NO_MATPLOTLIB)
        return None, NO_MATPLOTLIB
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return write(buffer.getvalue()), None
