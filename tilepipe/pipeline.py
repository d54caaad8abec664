"""The Python API: plan a run, run it, open its result. The CLI is a thin layer over this.

A run validates everything it can before it creates any output (the input opens and its last
block reads, the weights load, the output is free or ``overwrite`` is set), then runs the blocks,
writes the summary, and only then marks the store complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .blocks import BlockReport, RunContext
from .config import RunOptions, load_options
from .engine import EngineOptions, cached_engine
from .errors import TilepipeError
from .grid import Plan, TileGrid
from .model import ModelSpec, model_geometry
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


def _specs(input: str, options: RunOptions) -> tuple[SourceSpec, ModelSpec, EngineOptions]:
    if options.blending not in BLENDING_MODES:
        raise TilepipeError(f"--blending {options.blending!r}: choose one of {', '.join(BLENDING_MODES)}")
    if options.workers < 1:
        raise TilepipeError(f"--workers {options.workers} must be at least 1")
    source = SourceSpec(str(input), options.bands, ScalingRequest.parse(options.scaling, options.percentiles),
                        options.series, options.window, options.level)
    model = ModelSpec(options.model, str(options.weights), options.output_stride, options.num_classes,
                      options.class_names)
    return source, model, EngineOptions(options.device, options.precision, options.batch_size)


def _make_plan(source, options: RunOptions, output_stride: int) -> Plan:
    grid = TileGrid(options.tile_size, options.overlap, output_stride)
    return Plan(source.height, source.width, grid, options.chunk_size, options.block_size, source.depth)


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
    per_block = (read.area * (bands * itemsize + 1)
                 + (num_classes + 1) * min(b, p.height) * min(b, p.width) * 4
                 + options.batch_size * tile_px * (3 * 4 * 2 + num_classes * 4))
    stride = p.grid.output_stride
    activations_per_px = 3 if options.model == "standin" else 60 * (8 / stride) ** 0.5
    activations = options.batch_size * tile_px * activations_per_px * 4
    return RUNTIME_BYTES + parameters * 4 + options.workers * per_block + activations


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
    summary.files = store.save_summary(summary.data, summary.to_markdown())
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
