"""Many inputs in one run: every input into its own store under one folder, one model load per
process, one cluster, and a batch summary.

Each input is an ordinary run (:func:`tilepipe.pipeline.run_settled`: its lease, its checks, its
store ``OUTDIR/<name>.zarr`` and summary beside it), but all share one runner. In-process that
means one engine (the per-process cache of :mod:`tilepipe.engine` is keyed by the model and
engine options, which the inputs share) and the inputs run one after another, since they would
only queue for that one model. On a cluster, started once for the batch, :data:`INPUTS_IN_FLIGHT`
per slot run side by side: their tasks are on the scheduler together, so an input of a few blocks
never leaves the other workers idle, and each worker process keeps its model for every input.
The client holds only the inputs in flight open, so its memory does not grow with the batch.

One input failing (it does not open, a block fails, its store is in the way) is that input's
failure alone: it is listed with its one-line error, the others go on, and the batch raises
:class:`BatchFailed` at the end. With ``resume`` a complete store is kept as it is, a partial one
is resumed through its own fingerprint, and a missing one is run.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .batch_inputs import BATCH_NAME, BatchInput, collect_inputs
from .config import Settings, resolve_settings
from .errors import TilepipeError, fault_line
from .options import RunOptions
from .pipeline import Interrupted, RunFailed, checked_scheduling, run_settled
from .report.progress import BatchProgress
from .schedule import Scheduling, runner
from .sink import MaskStore, fs_path
from .sources.geotiff import bounded_gdal_cache
from .stopping import Stop, stop_on_signals

log = logging.getLogger("tilepipe")

INPUTS_IN_FLIGHT = 2
"""Inputs run at once per cluster slot: enough that one input's last tasks, or its client-side
setup and summary, overlap another's blocks."""

STATUSES = ("complete", "kept", "failed", "interrupted")
"""What became of an input: see :class:`InputResult`."""


class BatchFailed(TilepipeError):
    """Some inputs failed, or a stop signal ended the batch (``exit_code`` 130 or 143 then);
    ``summary`` (the batch summary) lists the inputs with their errors."""

    def __init__(self, message: str, summary: dict, exit_code: int = 1):
        super().__init__(message)
        self.summary = summary
        self.exit_code = exit_code


@dataclass(frozen=True)
class InputResult:
    item: BatchInput
    store: str
    status: str
    """``complete``, ``kept`` (complete before this run, with ``resume``), ``failed``, or
    ``interrupted`` (a stop signal came while it ran, or before it started)."""
    seconds: float
    summary: dict | None = None
    """The input's run summary (for ``kept``: the one saved in the store), if it got that far."""
    error: str | None = None

    def row(self) -> dict:
        data = self.summary or {}
        return {"name": self.item.name, "input": self.item.path, "series": self.item.series,
                "description": self.item.description, "store": self.store, "status": self.status,
                "pixels": round(data["input"]["megapixels"] * 1e6) if data else None,
                "seconds": round(self.seconds, 3),
                "megapixels_per_second": data["throughput"]["megapixels_per_second"] if data else None,
                "error": self.error}


def run_batch(inputs: list[str], outdir: str, options: RunOptions | None = None, *, config=None,
              progress_stream=None, progress_every: float | None = None, quiet: bool = False,
              **overrides) -> dict:
    """Run every input (see :mod:`tilepipe.batch_inputs`) into its store under ``outdir``; returns
    the batch summary, also written as ``outdir/batch.summary.json`` and ``.md``. Options resolve
    as for :func:`tilepipe.run` and apply to every input. Raises :class:`BatchFailed` when an input
    failed, after the others ran."""
    t0 = time.perf_counter()
    settings = resolve_settings(config, options, **overrides)
    opts = settings.options
    scheduling = checked_scheduling(opts)
    if opts.all_series and opts.series:
        raise TilepipeError("--all-series and --series contradict each other; choose one")
    found = collect_inputs(inputs, opts.all_series)
    fs, folder = fs_path(outdir)
    if fs.isfile(folder):
        raise TilepipeError(f"{outdir}: a file; with several inputs -o names a folder, which holds a store per input")
    fs.makedirs(folder, exist_ok=True)
    progress = None if quiet else BatchProgress(len(found.items), progress_stream, progress_every)
    stores = [f"{outdir.rstrip('/')}/{item.name}.zarr" for item in found.items]
    stop = Stop()  # one for the batch, heard in the main thread: a signal stops every input, not one
    try:
        # a second signal ends at once; the leases of the inputs in flight then name a process
        # that is gone, and the next run on this host takes them over at once
        with bounded_gdal_cache(), stop_on_signals(stop, at_once=lambda: None), runner(scheduling) as blocks_runner:
            def one(job: tuple[BatchInput, str]) -> InputResult:
                if stop.requested:
                    return InputResult(*job, "interrupted", 0.0, None, f"not started: {stop.name}")
                result = _run_input(*job, settings, scheduling, blocks_runner, progress, stop)
                if progress:
                    progress.input_done()
                return result

            jobs = list(zip(found.items, stores))
            if not scheduling.distributed:  # in this thread, as a single run
                results = [one(job) for job in jobs]
            else:
                with ThreadPoolExecutor(INPUTS_IN_FLIGHT * blocks_runner.slots, "tilepipe-input") as pool:
                    results = list(pool.map(one, jobs))
    finally:
        if progress:
            progress.close()
    summary = batch_summary(results, found.non_image, scheduling, time.perf_counter() - t0)
    _save(fs, folder, summary)
    if stop.requested:
        c = summary["counts"]
        raise BatchFailed(f"{stop.name}: the batch stopped with {c['complete'] + c['kept']} of {c['inputs']} inputs "
                          f"complete; run it again with --resume to finish it; see "
                          f"{outdir.rstrip('/')}/{BATCH_NAME}.summary.md", summary, stop.exit_code)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise BatchFailed(f"{len(failed)} of {len(results)} inputs failed (first: {first.item.name}: "
                          f"{first.error}); see {outdir.rstrip('/')}/{BATCH_NAME}.summary.md", summary)
    return summary


def _run_input(item: BatchInput, store: str, settings: Settings, scheduling: Scheduling, blocks_runner,
               progress: BatchProgress | None, stop: Stop) -> InputResult:
    """One input's run; whatever goes wrong is its result, never the batch's end."""
    t0 = time.perf_counter()
    options = settings.options.updated(series=item.series)
    try:
        if options.resume:
            kept = _complete_summary(store)
            if kept is not None:
                return InputResult(item, store, "kept", 0.0, kept)
            options = options.updated(resume=_exists(store))
        summary = run_settled(item.path, store, replace(settings, options=options), scheduling,
                              progress.input() if progress else None, blocks_runner=blocks_runner, t0=t0, stop=stop)
        return InputResult(item, store, "complete", time.perf_counter() - t0, summary.data)
    except Interrupted as exc:
        return InputResult(item, store, "interrupted", time.perf_counter() - t0,
                           exc.summary.data if exc.summary else None, str(exc))
    except RunFailed as exc:
        return InputResult(item, store, "failed", time.perf_counter() - t0, exc.summary.data, str(exc))
    except Exception as exc:  # noqa: BLE001 - one input's bug or bad data must not end the others
        if not isinstance(exc, TilepipeError):
            log.debug("%s: unexpected error", item.description, exc_info=True)
        log.warning("%s failed: %s", item.name, fault_line(exc))
        return InputResult(item, store, "failed", time.perf_counter() - t0, None, fault_line(exc))


def _exists(store: str) -> bool:
    fs, path = fs_path(store)
    return fs.exists(path)


def _complete_summary(store: str) -> dict | None:
    """The saved summary of a complete store at ``store``; None when there is none or it is partial."""
    if not _exists(store):
        return None
    try:
        opened = MaskStore.open(store)
    except TilepipeError:
        return None  # not a store: the resuming run says so
    return opened.summary if opened.is_complete else None


def batch_summary(results: list[InputResult], non_image: int, scheduling: Scheduling, wall: float) -> dict:
    rows = [r.row() for r in results]
    ran = [r for r in results if r.status == "complete"]
    megapixels = sum(r.summary["throughput"]["megapixels_processed"] for r in ran)
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    return {"inputs": rows, "counts": {"inputs": len(results), **counts},
            "non_image_objects_skipped": non_image, "scheduling": scheduling.describe(),
            "wall_seconds": round(wall, 3), "megapixels_processed": round(megapixels, 6),
            "megapixels_per_second": round(megapixels / wall, 6) if wall else 0.0}


def batch_markdown(summary: dict) -> str:
    c = summary["counts"]
    lines = [f"# Batch: {c['inputs']} inputs, " + ", ".join(f"{c[s]} {s}" for s in STATUSES if c[s] or s != "interrupted"),
             "",
             f"{summary['wall_seconds']:.1f} s on {summary['scheduling']}, {summary['megapixels_processed']:.2f} MP "
             f"processed, {summary['megapixels_per_second']:.2f} MP/s overall."]
    if summary["non_image_objects_skipped"]:
        lines.append(f"{summary['non_image_objects_skipped']} DICOM object(s) that are no image were skipped.")
    lines += ["", "| input | store | status | pixels | seconds | MP/s |", "|---|---|---|---|---|---|"]
    for row in summary["inputs"]:
        pixels = f"{row['pixels']:,}" if row["pixels"] is not None else ""
        rate = row["megapixels_per_second"] if row["megapixels_per_second"] is not None else ""
        lines.append(f"| {_cell(row['description'])} | {row['name']}.zarr | {row['status']} | {pixels} | "
                     f"{row['seconds']:.1f} | {rate} |")
    failed = [row for row in summary["inputs"] if row["error"]]
    if failed:
        lines += ["", "## Failures", ""] + [f"- {row['name']}: {row['error']}" for row in failed]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _save(fs, folder: str, summary: dict) -> None:
    for suffix, text in (("summary.json", json.dumps(summary, indent=2)), ("summary.md", batch_markdown(summary))):
        with fs.open(f"{folder.rstrip('/')}/{BATCH_NAME}.{suffix}", "w") as f:
            f.write(text)
