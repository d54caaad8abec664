"""The run summary: what ran, what it cost, where the time went; written beside the mask.

Every figure comes from this run's own measurements. Stage times are *busy* seconds summed over
the block tasks: with several workers, reading and writing overlap the forward pass, so the busy
times may add up to more than the wall time; the summary states that overlap instead of hiding it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from .blocks import STAGES, BlockReport

LIBRARIES = ("tilepipe", "torch", "torchvision", "numpy", "rasterio", "zarr", "dask", "pydicom")


@dataclass
class Summary:
    data: dict
    files: list[str] = field(default_factory=list)
    """Where the summary was written beside the store."""

    def __getitem__(self, key):
        return self.data[key]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, default=_jsonable)

    def to_markdown(self) -> str:
        return render_markdown(self.data)

    @property
    def ok(self) -> bool:
        return not self.data["failed_blocks"]


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return versions


def build_summary(prepared, reports: list[BlockReport], store_url: str, setup_seconds: float,
                  blocks_seconds: float, started: float) -> Summary:
    p, source, engine = prepared.plan, prepared.source, prepared.engine
    model, options = engine.model, prepared.options
    wall = time.perf_counter() - started
    busy = {stage: sum(r.seconds.get(stage, 0.0) for r in reports) for stage in STAGES}
    busy_total = sum(busy.values())
    tiles = sum(r.tiles for r in reports)
    no_data = [r for r in reports if r.no_data]
    failed = [r for r in reports if r.error]
    tiles_no_data = sum(r.tiles_skipped for r in reports) + sum(p.block(r.index).tile_count for r in no_data)
    warnings = []
    if model.random_weights:
        warnings.append("RANDOM WEIGHTS: this mask is meaningless; it only exercises the pipeline (--weights none).")
    if failed:
        warnings.append(f"{len(failed)} block(s) failed; the store is incomplete (run again to finish it).")
    data = {
        "tilepipe_summary": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "failed" if failed else "complete",
        "warnings": warnings,
        "input": {**source.describe(), "megapixels": round(p.megapixels, 4)},
        "output": {"store": store_url, "mask_shape": ([p.depth] if p.depth else []) + [p.height, p.width],
                   "chunks": [p.chunk_size, p.chunk_size], "probabilities": options.probabilities},
        "model": model.describe(),
        "engine": engine.describe(),
        "plan": {
            "tile": [p.tile_height, p.tile_width],
            "overlap": p.grid.overlap,
            "output_stride": p.grid.output_stride,
            "blending": options.blending,
            "chunk_size": p.chunk_size,
            "block_size": p.block_size,
            "blocks": p.block_count,
            "blocks_no_data": len(no_data),
            "blocks_failed": len(failed),
            "lattice_tiles": p.lattice_tiles,
            "tiles_planned": p.tiles_computed,
            "tiles_computed": tiles,
            "tiles_skipped_no_data": tiles_no_data,
            "overlap_cost_factor": round(p.overlap_cost_factor, 4),
        },
        "timing": {
            "wall_seconds": round(wall, 4),
            "setup_seconds": round(setup_seconds, 4),
            "blocks_wall_seconds": round(blocks_seconds, 4),
            "stage_busy_seconds": {k: round(v, 4) for k, v in busy.items()},
            "stage_share_of_block_busy": {k: round(v / busy_total, 4) if busy_total else 0.0 for k, v in busy.items()},
            "busy_over_blocks_wall": round(busy_total / blocks_seconds, 3) if blocks_seconds else 0.0,
        },
        "throughput": {
            "megapixels_per_second": round(p.megapixels / wall, 4) if wall else 0.0,
            "tiles_per_second": round(tiles / wall, 4) if wall else 0.0,
        },
        "environment": {
            "workers": options.workers,
            "scheduler": "in-process threads",
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "libraries": library_versions(),
        },
        "failed_blocks": [{"index": list(r.index), "core": r.core, "error": r.error} for r in failed],
    }
    return Summary(data)


def render_markdown(d: dict) -> str:
    inp, plan, timing, thr, model, eng = d["input"], d["plan"], d["timing"], d["throughput"], d["model"], d["engine"]
    lines = ["# tilepipe run summary", ""]
    lines += [f"> **{w}**" for w in d["warnings"]]
    if d["warnings"]:
        lines.append("")
    lines += [
        f"Status: **{d['status']}**, {d['created']}. Store: `{d['output']['store']}`, mask {' x '.join(map(str, d['output']['mask_shape']))} uint8.",
        "",
        "## Input",
        f"- `{inp['path']}`: {inp['format']}, {inp['width']} x {inp['height']} px"
        + (f" x {inp['depth']} planes" if inp.get("depth") else "")
        + f" ({inp['megapixels']} MP), {inp['dtype']}, bands {inp['bands_used']} of {inp['band_count']}"
        + "".join(f", {inp[k]}" for k in ("layout", "compression") if inp.get(k)),
        f"- Scaling: {inp['scaling']['method']} from {inp['scaling']['sample']} (low {inp['scaling']['low']}, high {inp['scaling']['high']})",
        "",
        "## Model",
        f"- {model['architecture']}, weights {model['weights']}, output stride {model['output_stride']}, "
        f"{model['num_classes']} classes, {model['parameters'] / 1e6:.1f} M parameters",
        f"- Device {eng['device']} ({eng['device_name']}), precision {eng['precision']}, batch {eng['batch_size']}",
        "",
        "## Plan",
        f"- Tiles {plan['tile'][0]} x {plan['tile'][1]}, overlap {plan['overlap']}, {plan['blending']} blending; "
        f"blocks of {plan['block_size']} px in {plan['chunk_size']} px chunks: {plan['blocks']} blocks",
        f"- Tiles computed {plan['tiles_computed']} (lattice {plan['lattice_tiles']}), overlap cost factor {plan['overlap_cost_factor']}",
        f"- Blocks with no data (written as 255, model skipped): {plan['blocks_no_data']}; tiles skipped as no-data: {plan['tiles_skipped_no_data']}",
        "",
        "## Time",
        f"- Wall {timing['wall_seconds']:.2f} s: setup {timing['setup_seconds']:.2f} s, blocks {timing['blocks_wall_seconds']:.2f} s",
        "",
        "| stage | busy s | share of busy |",
        "|---|---:|---:|",
    ]
    for stage, seconds in timing["stage_busy_seconds"].items():
        lines.append(f"| {stage} | {seconds:.3f} | {timing['stage_share_of_block_busy'][stage]:.1%} |")
    lines += [
        "",
        f"Busy time over the blocks' wall time: {timing['busy_over_blocks_wall']}x "
        f"({d['environment']['workers']} worker(s); above 1 means stages overlapped).",
        "",
        "## Throughput",
        f"- {thr['megapixels_per_second']} image megapixels/s, {thr['tiles_per_second']} tiles/s",
    ]
    if d["failed_blocks"]:
        lines += ["", "## Failed blocks", *[f"- block {b['index']} ({b['core']}): {b['error']}" for b in d["failed_blocks"]]]
    env = d["environment"]
    lines += ["", "## Environment",
              f"- Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs, {env['workers']} worker(s), {env['scheduler']}",
              "- " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()), ""]
    return "\n".join(lines)
