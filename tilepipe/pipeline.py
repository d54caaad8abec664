"""The Python API: plan a run, run it, open its result. The CLI is a thin layer over this.

A run validates everything it can before it creates any output (the input opens and its last
block reads, the weights load, the output is free or ``overwrite`` is set), then runs the blocks,
writes the summary, and only then marks the store complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .blocks import BlockReport, RunContext
from .config import RunOptions, load_options
from .engine import EngineOptions, cached_engine
from .errors import TilepipeError
from .grid import Plan, TileGrid
from .model import ModelSpec
from .schedule import run_blocks
from .sink import MaskStore, check_output, remove_output
from .sources import SourceSpec, open_source
from .sources.scaling import ScalingRequest
from .stitch import BLENDING_MODES
from .summary import Summary, build_summary


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


def prepare(input: str, output: str | None, options: RunOptions) -> Prepared:
    """Open the source and the model and build the plan; creates nothing."""
    if options.blending not in BLENDING_MODES:
        raise TilepipeError(f"--blending {options.blending!r}: choose one of {', '.join(BLENDING_MODES)}")
    if options.workers < 1:
        raise TilepipeError(f"--workers {options.workers} must be at least 1")
    source_spec = SourceSpec(str(input), options.bands, ScalingRequest.parse(options.scaling, options.percentiles),
                             options.series, options.window, options.level)
    source = open_source(source_spec)
    model_spec = ModelSpec(options.model, str(options.weights), options.output_stride, options.num_classes,
                           options.class_names)
    engine_options = EngineOptions(options.device, options.precision, options.batch_size)
    engine = cached_engine(model_spec, engine_options)
    grid = TileGrid(options.tile_size, options.overlap, engine.model.output_stride)
    plan = Plan(source.height, source.width, grid, options.chunk_size, options.block_size, source.depth)
    context = RunContext(source_spec, model_spec, engine_options, plan, str(output) if output else "",
                         options.blending, options.probabilities)
    return Prepared(options, source, engine, plan, context)


def plan(input: str, config=None, **overrides) -> dict:
    """A dry run: the plan's figures and an estimate of peak memory, without running the model."""
    options = resolve_options(config, **overrides)
    prepared = prepare(input, None, options)
    p, source, model = prepared.plan, prepared.source, prepared.engine.model
    return {
        "input": source.describe(),
        "image": {"height": p.height, "width": p.width, "planes": p.planes, "megapixels": round(p.megapixels, 3)},
        "tile": [p.tile_height, p.tile_width],
        "overlap": options.overlap,
        "output_stride": model.output_stride,
        "chunk_size": p.chunk_size,
        "block_size": p.block_size,
        "blocks": p.block_count,
        "lattice_tiles": p.lattice_tiles,
        "tiles_computed": p.tiles_computed,
        "overlap_cost_factor": round(p.overlap_cost_factor, 3),
        "estimated_peak_memory_mb": round(estimate_peak_memory(p, source, model, options) / 2**20),
    }


def estimate_peak_memory(p: Plan, source, model, options: RunOptions) -> float:
    """Bytes, roughly: model weights, plus per concurrent block its read window, tile batch,
    probabilities and accumulator, plus one batch of network activations.

    The activation figure (about 60 float32 values per tile pixel for DeepLabV3-ResNet101 at
    stride 8, 3 for the stand-in) is an empirical allowance, not an exact count."""
    b = p.block_size
    block = p.block((0, 0))
    read = block.read_window
    bands, itemsize = len(source.bands), np.dtype(source.dtype).itemsize
    tile_px = p.tile_height * p.tile_width
    per_block = (read.area * (bands * itemsize + 1)
                 + (model.num_classes + 1) * min(b, p.height) * min(b, p.width) * 4
                 + options.batch_size * tile_px * (3 * 4 * 2 + model.num_classes * 4))
    activations_per_px = 3 if model.spec.architecture == "standin" else 60 * (8 / model.output_stride) ** 0.5
    activations = options.batch_size * tile_px * activations_per_px * 4
    return model.parameters * 4 + options.workers * per_block + activations


def run(input: str, output: str, options: RunOptions | None = None, *, config=None,
        on_report: Callable[[BlockReport], None] | None = None, **overrides) -> Summary:
    """Segment ``input`` into the Zarr store ``output``; returns the run summary.

    Options come from defaults, the YAML ``config``, ``options`` and keyword overrides, in that
    order. Raises :class:`TilepipeError` for bad input (before any output exists) and
    :class:`RunFailed` when blocks fail (the store stays incomplete)."""
    t0 = time.perf_counter()
    options = resolve_options(config, options, **overrides)
    replacing = check_output(str(output), options.overwrite)
    prepared = prepare(input, output, options)
    source, engine, p = prepared.source, prepared.engine, prepared.plan
    if replacing:
        remove_output(str(output))
    store = MaskStore.create(
        str(output), p, engine.model.num_classes, options.probabilities,
        attrs={
            **source.geometry(),
            "nodata": 255,
            "class_names": list(engine.model.class_names),
            "tilepipe": {"input": str(input), "options": options.to_json(), "model": engine.model.describe()},
        },
        coordinates=source.coordinates(),
    )
    setup_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    reports = run_blocks(prepared.context, (b.index for b in p.blocks()), options.workers, on_report)
    blocks_seconds = time.perf_counter() - t1
    failed = [r for r in reports if r.error]
    summary = build_summary(prepared, reports, str(output), setup_seconds, blocks_seconds, t0)
    summary.files = store.save_summary(json.loads(summary.to_json()), summary.to_markdown())
    if failed:
        first = failed[0]
        raise RunFailed(
            f"{len(failed)} of {len(reports)} blocks failed (first: block {first.index} at {first.core}: "
            f"{first.error}); the store {output} is incomplete, see its summary.md", summary)
    store.mark_complete()
    return summary


def open(store: str) -> MaskStore:  # noqa: A001 - mirrors zarr.open / xarray.open_dataset
    """Open a tilepipe store for reading."""
    return MaskStore.open(str(store))
