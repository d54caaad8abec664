"""The Python API: plan a run, run it, open its result. The CLI is a thin layer over this.

A run validates everything it can before it creates any output (the input opens and its last
block reads, the weights load: :mod:`tilepipe.preparation`; the output is free or ``overwrite``
is set, or for ``resume`` the store's fingerprint matches: :mod:`tilepipe.resume`), then runs the blocks,
writes the summary, and only then marks the store complete.

A fault of the environment while the run writes (a full disk, a read-only folder) ends it with one
line naming the store, what was being written and what to do (:func:`_faults`); the traceback
goes to the log. A stop signal ends it as :class:`Interrupted` (:mod:`tilepipe.stopping`). Either
way the lease is released and the store is not marked complete, so ``--resume`` finishes it.

Each run has a run id. It holds the store's lease (:mod:`tilepipe.lease`) from before it looks at
the output until it ends, so a second writer is refused; the id is written into the store and
keys the per-process caches of store handles and sources, so a later run in the same process
(a notebook, a long-lived Dask worker) never writes through an earlier run's handles.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from contextlib import contextmanager, nullcontext

from .config import Settings, resolve_settings
from .errors import TilepipeError, fault_line, what_to_do
from .labels import NO_LABEL
from .lease import Lease
from .model.compare import compare_architectures
from .options import RunOptions
from .preparation import prepare
from .pyramid import build_pyramid
from .report.preview import PREVIEW_SIZE, write_preview
from .report.progress import Progress
from .report.summary import Summary, build_summary
from .report.timeline import write_timeline
from .resume import blocks_to_run, fingerprint, open_for_resume
from .retry import RetryCount
from .schedule import Scheduling, runner
from .sink import MaskStore, check_output, remove_output
from .sizing import estimate_peak_memory, resolved_workers, return_large_frees
from .sources.geotiff import bounded_gdal_cache
from .stopping import Stop, stop_on_signals
from .store_info import StoreInfo

log = logging.getLogger("tilepipe")


class RunFailed(TilepipeError):
    """Some blocks failed; the store is left incomplete and ``summary`` lists them."""

    def __init__(self, message: str, summary: Summary):
        super().__init__(message)
        self.summary = summary


class Interrupted(RunFailed):
    """A stop signal ended the run (see :mod:`tilepipe.stopping`); ``exit_code`` is 130 or 143."""

    def __init__(self, message: str, summary: Summary | None, exit_code: int):
        super().__init__(message, summary)
        self.exit_code = exit_code


@contextmanager
def _faults(doing: str, output: str, then: str = "run again with --resume"):
    """An ``OSError`` raised while ``doing`` (e.g. "writing the pyramid of", followed by the store)
    becomes one line in the user's terms: "no space left on device while writing the pyramid of X;
    free space and run again with --resume". The traceback goes to the log (``--log-file``)."""
    try:
        yield
    except OSError as exc:
        log.debug("%s %s failed", doing, output, exc_info=True)
        line = fault_line(exc)
        raise TilepipeError(f"{line} while {doing} {output}; {what_to_do(line)}{then}") from exc


def plan(input: str, config=None, compare: bool = False, *, options: RunOptions | None = None,
         preview: str | None = None, preview_size: int = PREVIEW_SIZE, **overrides) -> dict:
    """A dry run: the plan's figures and an estimate of peak memory, without loading weights or
    running the model. Options resolve as for :func:`run`. With ``compare``, the cost of every
    architecture and output stride on this scene and plan (counted on the meta device).
    ``preview``: also draw the plan over a thumbnail of the input to this PNG."""
    if preview_size < 16:
        raise TilepipeError(f"--preview-size {preview_size}: must be at least 16 px")
    settings = resolve_settings(config, options, **overrides)
    options = settings.options
    prepared = prepare(input, "", settings, load_engine=False)
    source, model, p = prepared.source, prepared.model, prepared.plan
    stride, num_classes, parameters = model.output_stride, model.num_classes, model.parameters
    drawn = None
    if preview:
        drawn = write_preview(source, p, options.overlap, resolved_workers(options), str(preview), preview_size)
    return {
        "preview": drawn,
        "input": source.describe(),
        "image": {"height": p.height, "width": p.width, "planes": p.planes, "megapixels": round(p.megapixels, 3)},
        "tile": [p.tile_height, p.tile_width],
        "overlap": options.overlap,
        "output_stride": stride,
        "chunk_size": p.chunk_size,
        "block_size": p.block_size,
        "strips": p.strips,
        "strip_width": p.strip_width,
        "blocks": p.block_count,
        "tasks": len(p.tasks(slots=resolved_workers(options))),
        "lattice_tiles": p.lattice_tiles,
        "tiles_computed": p.tiles_computed,
        "overlap_cost_factor": round(p.overlap_cost_factor, 3),
        "estimated_peak_memory_mb": round(estimate_peak_memory(p, source, options, num_classes, parameters) / 2**20),
        "model": {"architecture": model.spec.architecture, "weights": model.weights_identity,
                  "in_channels": model.in_channels, "num_classes": num_classes, "parameters": parameters},
        **({"compare": compare_architectures(p, model.in_channels, num_classes)} if compare else {}),
    }


def _location(path: str) -> str:
    """Workers resolve paths against their own working directory: make local paths absolute."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def run(input: str, output: str, options: RunOptions | None = None, *, config=None,
        progress: Progress | None = None, **overrides) -> Summary:
    """Segment ``input`` into the Zarr store ``output``; returns the run summary.

    Options come from defaults, the YAML ``config``, ``options`` and keyword overrides, in that
    order. Raises :class:`TilepipeError` for bad input (before any output exists) and
    :class:`RunFailed` when blocks fail (the store stays incomplete). With ``resume=True`` an
    existing store made from the same input, plan, model and precision is completed: only its
    unfinished blocks run.

    While the run is live it holds the store's lease: another run on the same output (with or
    without ``overwrite`` or ``resume``) is refused, naming this one. A dead run's lease is taken
    over."""
    t0 = time.perf_counter()
    settings = resolve_settings(config, options, **overrides)
    options = settings.options
    if options.all_series:
        raise TilepipeError("--all-series runs each series into its own store: use tilepipe.batch.run_batch")
    scheduling = checked_scheduling(options)
    with bounded_gdal_cache():  # process-wide, so chosen here, for the run, and restored after it
        return run_settled(input, output, settings, scheduling, progress, t0=t0)


def checked_scheduling(options: RunOptions) -> Scheduling:
    """Where a run's blocks go, once the options that contradict each other are refused: one
    place for a single run and a batch (:mod:`tilepipe.batch`), so the two never schedule apart."""
    if options.resume and options.overwrite:
        raise TilepipeError("--resume and --overwrite contradict each other; choose one")
    return Scheduling(workers=resolved_workers(options), cluster=options.cluster, scheduler=options.scheduler,
                      device=options.device)


def run_settled(input: str, output: str, settings: Settings, scheduling: Scheduling, progress: Progress | None = None,
                *, blocks_runner=None, t0: float | None = None, stop: Stop | None = None) -> Summary:
    """:func:`run` once its options are resolved, under the lease of ``output``. ``blocks_runner``:
    a runner the caller started and keeps (:mod:`tilepipe.batch` runs every input through one
    cluster, whose workers load the model once); by default the run starts its own. ``stop``: a
    stop the caller listens for (a batch's, shared by its inputs); by default the run installs
    its own signal handlers (from the main thread only)."""
    t0 = time.perf_counter() if t0 is None else t0
    input, output = _location(str(input)), _location(str(output))
    run_id = uuid.uuid4().hex[:12]
    lease = Lease.acquire(output, run_id)
    own_stop = None if stop is not None else Stop()
    return_large_frees()  # process-wide, one-way (glibc's allocator), so chosen here
    try:
        with nullcontext() if own_stop is None else stop_on_signals(own_stop, at_once=lease.release):
            return _run_leased(input, output, settings, scheduling, run_id, progress, t0, stop or own_stop,
                               lease.retries, blocks_runner)
    finally:
        lease.release()


def _run_leased(input: str, output: str, settings: Settings, scheduling: Scheduling, run_id: str,
                progress: Progress | None, t0: float, stop: Stop, lease_retries: RetryCount,
                shared_runner=None) -> Summary:
    options, card_file = settings.options, settings.card_file
    replacing = False if options.resume else check_output(output, options.overwrite)
    prepared = prepare(input, output, settings, run_id, load_engine=not scheduling.distributed)
    source, model, p = prepared.source, prepared.model, prepared.plan
    with nullcontext(shared_runner) if shared_runner else runner(scheduling) as blocks_runner:
        expected = fingerprint(prepared, blocks_runner.engine_kind(prepared.context.engine))
        if stop.requested:  # while preparing: nothing written yet
            raise Interrupted(f"{stop.name}: stopped before any block ran; {output} is as it was", None,
                              stop.exit_code)
        if options.resume:
            with _faults("opening", output):
                store = open_for_resume(output, expected, run_id)
                todo, repaired = blocks_to_run(store, p)
        else:
            with _faults("creating", output, then="run again with --overwrite"):
                if replacing:
                    remove_output(output)
                store = MaskStore.create(
                    output, p, model.num_classes, options.probabilities,
                    attrs={
                        **source.geometry(),
                        "nodata": NO_LABEL,
                        "class_names": list(model.class_names),
                        **({"class_colours": [list(c) for c in card_file.class_colours]}
                           if card_file and card_file.class_colours else {}),
                    },
                    coordinates=source.coordinates(),
                    run_id=run_id,
                    info=StoreInfo(input=input, options=options.to_json(), model=model.describe(), fingerprint=expected),
                )
            todo, repaired = [b.index for b in p.blocks()], 0
        reused = p.block_count - len(todo)
        if progress:
            progress.begin(len(todo), {i: p.block(i).core.area / 1e6 for i in todo}, reused)
            progress.connected(blocks_runner.dashboard)
        setup_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        tasks = p.tasks(todo, blocks_runner.slots, split=blocks_runner.split)
        reports = blocks_runner.run(prepared.context, tasks, progress, stop)
        blocks_seconds = time.perf_counter() - t1
        failed = [r for r in reports if r.error]
        for report in failed:
            log.info("block %s (%s) failed: %s", report.index, report.core, report.error)
            log.debug("block %s traceback:\n%s", report.index, report.traceback)
        done = reused + len(reports) - len(failed)
        if stop.requested:  # a task cancelled while it ran may have stored blocks it never reported
            done = int(store.done_blocks().sum())
        interrupted = stop.requested and done < p.block_count  # a stop after the last block changes nothing
        t2 = time.perf_counter()
        finished = not failed and not interrupted
        with _faults("writing the pyramid of", output):
            levels = build_pyramid(store) if finished else []  # derived from the finished blocks, so after them
        pyramid = {"levels": levels, "seconds": time.perf_counter() - t2, "built": finished}
        summary = build_summary(prepared, reports, output, setup_seconds, blocks_seconds, t0,
                                scheduling=scheduling, slots=blocks_runner.slots, reused=reused, repaired=repaired,
                                pyramid=pyramid)
    retries = sum(r.retries for r in reports) + store.retries.take() + lease_retries.take()
    summary.data["output"]["retries"] = retries
    if retries:
        summary.data["warnings"].append(f"{retries} write(s) to storage were tried again after a transient error.")
    if interrupted:
        summary.data["status"] = f"interrupted: {done} of {p.block_count} blocks done"
        summary.data["warnings"].insert(0, f"INTERRUPTED by {stop.name}: {done} of {p.block_count} blocks done; "
                                           "finish with --resume.")
    unsaved = _save_reports(store, summary, reports, output, finished)
    if interrupted:
        raise Interrupted(f"{stop.name}: {summary['status']} in {output}; run again with --resume to finish it"
                          f"{unsaved}", summary, stop.exit_code)
    if failed:
        raise RunFailed(_failed_line(failed, len(reports), output) + unsaved, summary)
    with _faults("marking complete", output):
        store.mark_complete()
    return summary


def _failed_line(failed: list, ran: int, output: str) -> str:
    """Why the blocks failed, led by the cause when the environment is at fault (a full disk)."""
    first = failed[0]
    to_do = what_to_do(first.error)
    if to_do:
        return (f"{first.error} while writing the blocks of {output}: {len(failed)} of {ran} blocks not stored; "
                f"{to_do}run again with --resume")
    return (f"{len(failed)} of {ran} blocks failed (first: block {first.index} at {first.core}: {first.error}); "
            f"the store {output} is incomplete (finish it with --resume), see its summary")


def _save_reports(store: MaskStore, summary: Summary, reports: list, output: str, finished: bool) -> str:
    """Write the timeline picture and the summary beside the store. After a failed or stopped run
    a fault here (the disk that failed the blocks is still full) must not hide the run's own
    ending: it is logged and returned as a clause for that ending's line; otherwise it is raised."""
    try:
        with _faults("writing the summary of", output):
            timeline, note = write_timeline(reports, lambda png: store.write_beside("timeline.png", png))
            summary.data["output"].update(timeline=timeline, timeline_note=note)
            summary.files = store.save_summary(summary.data, summary.to_markdown())
    except TilepipeError as exc:
        if finished:
            raise
        log.debug("the summary of %s was not written: %s", output, exc)
        return f" (its summary could not be written: {fault_line(exc.__cause__ or exc)})"
    return ""


def open(store: str) -> MaskStore:  # noqa: A001 - mirrors zarr.open / xarray.open_dataset
    """Open a tilepipe store for reading."""
    return MaskStore.open(str(store))
