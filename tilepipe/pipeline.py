"""The Python API: plan a run, run it, open its result. The CLI is a thin layer over this.

A run validates everything it can before it creates any output (the input opens and its last
block reads, the weights load, the output is free or ``overwrite`` is set), then runs the blocks,
writes the summary, and only then marks the store complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from .blocks import RunContext
from .config import RunOptions, load_options
from .engine import EngineOptions, cached_engine
from .errors import TilepipeError
from .grid import Plan, TileGrid
from .model import ModelSpec, model_geometry
from .progress import Progress
from .schedule import Scheduling, runner
from .sink import MaskStore, check_output, remove_output
from .sources import SourceSpec, open_source
from .sources.scaling import ScalingRequest
from .stitch import BLENDING_MODES
from .summary import Summary, build_summary

log = logging.getLogger("tilepipe")


class RunFailed(TilepipeError):
    """Some blocks failed; the store is left incomplete and ``summary`` lists them."""

    def __init__(self, message: str, summary: Summary):
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class Prepared:
    options: RunOptions
    source: object
    engine: object
    plan: Plan
    context: RunContext


def resolve_options(config=None, options: RunOptions | None = None, **overrides) -> RunOptions:
    """Defaults, then the YAML ``config`` file, then ``options``/keyword overrides."""
    base = load_options(config)
    if options is not None:
        base = base.updated(**{k: v for k, v in options.to_json().items() if v != getattr(RunOptions(), k)})
    return base.updated(**overrides)


def _specs(input: str, options: RunOptions) -> tuple[SourceSpec, ModelSpec, EngineOptions]:
    if options.blending not in BLENDING_MODES:
        raise TilepipeError(f"--blending {options.blending!r}: choose one of {', '.join(BLENDING_MODES)}")
    source = SourceSpec(str(input), options.bands, ScalingRequest.parse(options.scaling, options.percentiles),
                        options.series, options.window, options.level, options.select)
    model = ModelSpec(options.model, str(options.weights), options.output_stride, options.num_classes,
                      options.class_names)
    return source, model, EngineOptions(options.device, options.precision, options.batch_size, options.compile)


def _make_plan(source, options: RunOptions, output_stride: int) -> Plan:
    grid = TileGrid(options.tile_size, options.overlap, output_stride)
    return Plan(source.height, source.width, grid, options.chunk_size, options.block_size, source.depth,
                getattr(source, "volumes", None))


def prepare(input: str, output: str, options: RunOptions) -> Prepared:
    """Open the source, load the model and build the plan; creates nothing."""
    source_spec, model_spec, engine_options = _specs(input, options)
    source = open_source(source_spec)
    engine = cached_engine(model_spec, engine_options)
    plan = _make_plan(source, options, engine.model.output_stride)
    context = RunContext(source_spec, model_spec, engine_options, plan, str(output), options.blending,
                         options.probabilities)
    return Prepared(options, source, engine, plan, context)


def plan(input: str, config=None, **overrides) -> dict:
    """A dry run: the plan's figures and an estimate of peak memory, without loading weights or
    running the model."""
    options = resolve_options(config, **overrides)
    source_spec, model_spec, _ = _specs(input, options)
    source = open_source(source_spec)
    stride, num_classes, parameters = model_geometry(model_spec)
    p = _make_plan(source, options, stride)
    return {
        "input": source.describe(),
        "image": {"height": p.height, "width": p.width, "planes": p.planes, "megapixels": round(p.megapixels, 3)},
        "tile": [p.tile_height, p.tile_width],
        "overlap": options.overlap,
        "output_stride": stride,
        "chunk_size": p.chunk_size,
        "block_size": p.block_size,
        "blocks": p.block_count,
        "lattice_tiles": p.lattice_tiles,
        "tiles_computed": p.tiles_computed,
        "overlap_cost_factor": round(p.overlap_cost_factor, 3),
        "estimated_peak_memory_mb": round(estimate_peak_memory(p, source, options, num_classes, parameters) / 2**20),
    }


RUNTIME_BYTES = 800 * 2**20
"""Resident size of Python with torch, torchvision, rasterio, zarr and dask imported (measured:
774 MB with the CUDA build of torch 2.15 on Linux x86-64)."""


def estimate_peak_memory(p: Plan, source, options: RunOptions, num_classes: int, parameters: int) -> float:
    """Bytes, roughly: the runtime, the model weights, plus per concurrent block its read window,
    tile batch, probabilities and accumulator, plus one batch of network activations.

    The activation figure (about 60 float32 values per tile pixel for DeepLabV3-ResNet101 at
    stride 8, 3 for the stand-in) is an empirical allowance, not an exact count."""
    b = p.block_size
    read = p.block((0,) * len(p.block_grid_shape)).read_window
    bands, itemsize = len(source.bands), np.dtype(source.dtype).itemsize
    tile_px = p.tile_height * p.tile_width
    batch = 4 if options.batch_size == "auto" else options.batch_size  # auto sizes itself to the free GPU memory
    per_block = (read.area * (bands * itemsize + 1)
                 + (num_classes + 1) * min(b, p.height) * min(b, p.width) * 4
                 + batch * tile_px * (3 * 4 * 2 + num_classes * 4))
    stride = p.grid.output_stride
    activations_per_px = 3 if options.model == "standin" else 60 * (8 / stride) ** 0.5
    activations = batch * tile_px * activations_per_px * 4
    return RUNTIME_BYTES + parameters * 4 + options.workers * per_block + activations


def _location(path: str) -> str:
    """Workers resolve paths against their own working directory: make local paths absolute."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def fingerprint(prepared: Prepared) -> dict:
    """What must match for ``--resume`` to reuse a store's finished blocks: the input (identity,
    size, bands, scaling and geometry), the plan and the model. Workers, batch size and device
    may change between the two runs: they do not change a pixel."""
    source, p, model = prepared.source, prepared.plan, prepared.engine.model
    described = source.describe()
    geometry = json.dumps(source.geometry(), sort_keys=True, default=str)
    return json.loads(json.dumps({
        "input": {k: described.get(k) for k in ("path", "format", "height", "width", "depth", "bands_used", "dtype",
                                                "scaling")},
        "geometry_sha256": hashlib.sha256(geometry.encode()).hexdigest(),
        "plan": {"tile": [p.tile_height, p.tile_width], "overlap": p.grid.overlap, "output_stride": p.grid.output_stride,
                 "chunk_size": p.chunk_size, "block_size": p.block_size, "blending": prepared.options.blending,
                 "probabilities": prepared.options.probabilities},
        "model": {"architecture": model.spec.architecture, "weights": model.weights_identity,
                  "num_classes": model.num_classes},
    }, default=str))


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} ({a!r} then, {b!r} now)")
    return out


def _open_for_resume(output: str, prepared: Prepared) -> MaskStore:
    try:
        store = MaskStore.open(output, mode="r+")
    except TilepipeError:
        raise TilepipeError(f"{output}: nothing to resume (no tilepipe store there); run without --resume") from None
    changed = _differences(store.info.get("fingerprint", {}), fingerprint(prepared))
    if changed:
        raise TilepipeError(f"{output}: cannot resume, the store was made with a different "
                            f"{'; '.join(changed[:3])}; the store is left untouched")
    return store


def run(input: str, output: str, options: RunOptions | None = None, *, config=None,
        progress: Progress | None = None, **overrides) -> Summary:
    """Segment ``input`` into the Zarr store ``output``; returns the run summary.

    Options come from defaults, the YAML ``config``, ``options`` and keyword overrides, in that
    order. Raises :class:`TilepipeError` for bad input (before any output exists) and
    :class:`RunFailed` when blocks fail (the store stays incomplete). With ``resume=True`` an
    existing store made from the same input, plan and model is completed: only its unfinished
    blocks run."""
    t0 = time.perf_counter()
    options = resolve_options(config, options, **overrides)
    if options.resume and options.overwrite:
        raise TilepipeError("--resume and --overwrite contradict each other; choose one")
    scheduling = Scheduling(options.workers, options.cluster, options.scheduler)
    input, output = _location(str(input)), _location(str(output))
    replacing = False if options.resume else check_output(output, options.overwrite)
    prepared = prepare(input, output, options)
    source, engine, p = prepared.source, prepared.engine, prepared.plan
    if options.resume:
        store = _open_for_resume(output, prepared)
        done = store.done_blocks()
        todo = [b.index for b in p.blocks() if not done[b.index]]
    else:
        if replacing:
            remove_output(output)
        store = MaskStore.create(
            output, p, engine.model.num_classes, options.probabilities,
            attrs={
                **source.geometry(),
                "nodata": 255,
                "class_names": list(engine.model.class_names),
                "tilepipe": {"input": input, "options": options.to_json(), "model": engine.model.describe(),
                             "fingerprint": fingerprint(prepared)},
            },
            coordinates=source.coordinates(),
        )
        todo = [b.index for b in p.blocks()]
    reused = p.block_count - len(todo)
    with runner(scheduling) as blocks_runner:
        if progress:
            progress.begin(len(todo), {i: p.block(i).core.area / 1e6 for i in todo}, reused)
            progress.connected(blocks_runner.dashboard)
        setup_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        reports = blocks_runner.run(prepared.context, todo, progress)
        blocks_seconds = time.perf_counter() - t1
        failed = [r for r in reports if r.error]
        for report in failed:
            log.info("block %s (%s) failed: %s", report.index, report.core, report.error)
            log.debug("block %s traceback:\n%s", report.index, report.traceback)
        summary = build_summary(prepared, reports, output, setup_seconds, blocks_seconds, t0,
                                scheduling=scheduling, slots=blocks_runner.slots, reused=reused)
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
