"""The Python API: plan a run, run it, open its result. The CLI is a thin layer over this.

A run validates everything it can before it creates any output (the input opens and its last
block reads, the weights load: :mod:`tilepipe.preparation`; the output is free or ``overwrite``
is set, or for ``resume`` the store's fingerprint matches: :mod:`tilepipe.resume`), then runs the blocks,
writes the summary, and only then marks the store complete.

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

from .config import Settings, resolve_settings
from .errors import TilepipeError
from .lease import Lease
from .model.compare import compare_architectures
from .options import RunOptions
from .preparation import prepare
from .pyramid import build_pyramid
from .report.preview import PREVIEW_SIZE, write_preview
from .report.progress import Progress
from .report.summary import Summary, build_summary
from .report.timeline import write_timeline
from .resume import fingerprint, open_for_resume
from .schedule import Scheduling, runner
from .sink import NO_LABEL, MaskStore, check_output, remove_output
from .sizing import estimate_peak_memory, resolved_workers, return_large_frees
from .sources.geotiff import bounded_gdal_cache

log = logging.getLogger("tilepipe")


class RunFailed(TilepipeError):
    """Some blocks failed; the store is left incomplete and ``summary`` lists them."""

    def __init__(self, message: str, summary: Summary):
        super().__init__(message)
        self.summary = summary


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
    if options.resume and options.overwrite:
        raise TilepipeError("--resume and --overwrite contradict each other; choose one")
    scheduling = Scheduling(workers=resolved_workers(options), cluster=options.cluster, scheduler=options.scheduler)
    input, output = _location(str(input)), _location(str(output))
    run_id = uuid.uuid4().hex[:12]
    lease = Lease.acquire(output, run_id)
    return_large_frees()  # process-wide, one-way (glibc's allocator), so chosen here
    try:
        with bounded_gdal_cache():  # process-wide, so chosen here, for the run, and restored after it
            return _run_leased(input, output, settings, scheduling, run_id, progress, t0)
    finally:
        lease.release()


def _run_leased(input: str, output: str, settings: Settings, scheduling: Scheduling, run_id: str,
                progress: Progress | None, t0: float) -> Summary:
    options, card_file = settings.options, settings.card_file
    replacing = False if options.resume else check_output(output, options.overwrite)
    prepared = prepare(input, output, settings, run_id, load_engine=not scheduling.distributed)
    source, model, p = prepared.source, prepared.model, prepared.plan
    with runner(scheduling) as blocks_runner:
        expected = fingerprint(prepared, blocks_runner.engine_kind(prepared.context.engine))
        if options.resume:
            store = open_for_resume(output, expected, run_id)
            done = store.done_blocks()
            todo = [b.index for b in p.blocks() if not done[b.index]]
        else:
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
                    "tilepipe": {"input": input, "options": options.to_json(), "model": model.describe(),
                                 "fingerprint": expected},
                },
                coordinates=source.coordinates(),
                run_id=run_id,
            )
            todo = [b.index for b in p.blocks()]
        reused = p.block_count - len(todo)
        if progress:
            progress.begin(len(todo), {i: p.block(i).core.area / 1e6 for i in todo}, reused)
            progress.connected(blocks_runner.dashboard)
        setup_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        tasks = p.tasks(todo, blocks_runner.slots, split=blocks_runner.split)
        reports = blocks_runner.run(prepared.context, tasks, progress)
        blocks_seconds = time.perf_counter() - t1
        failed = [r for r in reports if r.error]
        for report in failed:
            log.info("block %s (%s) failed: %s", report.index, report.core, report.error)
            log.debug("block %s traceback:\n%s", report.index, report.traceback)
        t2 = time.perf_counter()
        levels = [] if failed else build_pyramid(store)  # derived from the finished blocks, so after them
        pyramid = {"levels": levels, "seconds": time.perf_counter() - t2, "built": not failed}
        summary = build_summary(prepared, reports, output, setup_seconds, blocks_seconds, t0,
                                scheduling=scheduling, slots=blocks_runner.slots, reused=reused, pyramid=pyramid)
    timeline, note = write_timeline(reports, *store.beside("timeline.png"))
    summary.data["output"].update(timeline=timeline, timeline_note=note)
    summary.files = store.save_summary(summary.data, summary.to_markdown())
    if failed:
        first = failed[0]
        raise RunFailed(
            f"{len(failed)} of {len(reports)} blocks failed (first: block {first.index} at {first.core}: "
            f"{first.error}); the store {output} is incomplete (finish it with --resume), see its summary", summary)
    store.mark_complete()
    return summary


def open(store: str) -> MaskStore:  # noqa: A001 - mirrors zarr.open / xarray.open_dataset
    """Open a tilepipe store for reading."""
    return MaskStore.open(str(store))
