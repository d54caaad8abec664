"""The run summary's figures: each section computed from this run's own measurements.

One function per section of ``summary.json``, each a pure function of what the run measured
(the block reports, the plan, the wall-clock parts), except :func:`environment_figures`, which
asks the machine. Stage times are *busy* seconds summed over the block tasks: with several
workers, reading and writing overlap the forward pass, so busy times may add up to more than the
blocks' wall time, and :func:`timing_figures` states that overlap instead of hiding it. The wall
time is split into parts that run one after another (setup, blocks, pyramid, finalise).
"""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version

from ..blocks import STAGES, BlockReport
from ..sizing import sizing_note

LIBRARIES = ("tilepipe", "torch", "torchvision", "numpy", "rasterio", "zarr", "dask", "distributed", "pydicom")

MACS_NOTE = ("multiply-adds of one forward pass as run (no auxiliary head), counted at run time "
             "with torch.utils.flop_counter on a meta-device copy")


def rounded(value: float, digits: int = 4) -> float:
    """Every figure is stored to a fixed number of digits, so summaries compare as text."""
    return round(float(value), digits)


def stage_busy(reports: list[BlockReport]) -> dict[str, float]:
    """Seconds each stage was busy, summed over the block reports (``BlockReport.seconds``)."""
    return {stage: sum(r.seconds.get(stage, 0.0) for r in reports) for stage in STAGES}


def model_figures(model, cost: dict, card_file) -> dict:
    """``model``: the model's own description (``ModelCard.describe()``), its multiply-adds per tile
    from :func:`.cost.cost_figures` and the card file it came from, if any."""
    return {
        **model.describe(),
        "macs_per_tile": cost["macs_per_tile"],
        "macs_counted_on": list(cost["tile"]),
        "macs_note": MACS_NOTE,
        "card_file": card_file.describe() if card_file else None,
    }


def output_figures(plan, store_url: str, probabilities: bool, pyramid: dict) -> dict:
    """``output``: the store, the mask's shape and chunks (the plan's), and the pyramid's levels
    (:func:`tilepipe.pyramid.build_pyramid`; ``None`` when it was not built, after failed blocks)."""
    p = plan
    return {"store": store_url, "mask_shape": [*p.stack_shape, p.height, p.width],
            "chunks": [p.chunk_size, p.chunk_size], "probabilities": probabilities,
            "pyramid_levels": [list(shape) for shape in pyramid["levels"]] if pyramid["built"] else None}


def plan_figures(plan, reports: list[BlockReport], blending: str, reused: int, repaired: int = 0) -> dict:
    """``plan``: the plan's geometry (:class:`tilepipe.partition.Plan`) and what the block reports say
    was read, computed, skipped and written. ``repaired``: blocks a resume found recorded as done
    but missing chunks, run again (among ``blocks_run``)."""
    p = plan
    tiles = sum(r.tiles for r in reports)
    tiles_no_data = sum(r.tiles_skipped for r in reports)
    tiles_planned = tiles + tiles_no_data
    return {
        "tile": [p.tile_height, p.tile_width],
        "overlap": p.grid.overlap,
        "output_stride": p.grid.output_stride,
        "blending": blending,
        "chunk_size": p.chunk_size,
        "block_size": p.block_size,
        "strips": p.strips,
        "strip_width": p.strip_width,
        "blocks": p.block_count,
        "blocks_run": len(reports),
        "blocks_reused": reused,
        "blocks_repaired": repaired,
        "blocks_no_data": sum(1 for r in reports if r.no_data),
        "blocks_failed": sum(1 for r in reports if r.error),
        "lattice_tiles": p.lattice_tiles,
        "tiles_planned": tiles_planned,
        "tiles_computed": tiles,
        "tiles_skipped_no_data": tiles_no_data,
        "compute_saved_by_skipping": rounded(tiles_no_data / tiles_planned) if tiles_planned else 0.0,
        "overlap_cost_factor": rounded(p.overlap_cost_factor),
        "read_megapixels": rounded(sum(r.read_pixels for r in reports) / 1e6),
        "largest_read_megapixels": rounded(max((r.largest_read_pixels for r in reports), default=0) / 1e6),
        "forward_calls": sum(r.forward_calls for r in reports),
        "chunks_written": sum(_chunks(p.block(r.index).core, p.chunk_size) for r in reports if not r.error),
    }


def _chunks(core, chunk: int) -> int:
    return -(-core.height // chunk) * -(-core.width // chunk)


def timing_figures(busy: dict[str, float], sequential: dict[str, float], wall: float, workers: int) -> dict:
    """``timing``: the stages' busy seconds (:func:`stage_busy`) as shares of the stage work and of
    the wall time, and the wall time's parts that ran one after another (``sequential``: setup,
    blocks, pyramid, finalise, timed by :func:`tilepipe.pipeline.run` and the summary itself)."""
    busy_total = sum(busy.values())
    blocks = sequential["blocks"]
    return {
        "stage_busy_seconds": {k: rounded(v) for k, v in busy.items()},
        "stage_share_of_block_busy": {k: rounded(v / busy_total) if busy_total else 0.0 for k, v in busy.items()},
        "busy_over_blocks_wall": rounded(busy_total / blocks, 3) if blocks else 0.0,
        "wall_seconds": rounded(wall),
        "sequential_seconds": {k: rounded(v) for k, v in sequential.items()},
        "stage_share_of_wall": {k: rounded(v / wall) for k, v in busy.items()},
        "overlap": _overlap_note(busy_total, blocks, workers),
    }


def _overlap_note(busy_total: float, blocks_wall: float, workers: int) -> str:
    if blocks_wall <= 0:
        return "no blocks ran"
    ratio = busy_total / blocks_wall
    if ratio > 1.02:
        return (f"stages overlapped ({workers} block task(s) at once, each preparing its next batches while the "
                f"model runs): {busy_total:.2f} s of stage work in {blocks_wall:.2f} s of wall time ({ratio:.2f}x), "
                "so stage times add up to more than the wall time")
    return f"stages ran one after another: {busy_total:.2f} s of stage work in {blocks_wall:.2f} s of wall time"


def throughput_figures(megapixels: float, tiles: int, macs_per_tile: int, forward_seconds: float, wall: float,
                       engine: dict) -> dict:
    """``throughput``: image megapixels (the finished blocks' cores) and tiles per wall second, and
    the model's TFLOP/s (2 FLOPs per multiply-add, over the forward stage's busy seconds and over
    the wall time), set against the device's datasheet peak (``engine["peak_tflops"]``)."""
    flops = 2 * macs_per_tile * tiles
    peak, warmup = engine["peak_tflops"], engine["compile_warmup_seconds"]
    return {
        "megapixels_processed": rounded(megapixels, 6),
        "megapixels_per_second": rounded(megapixels / wall, 6),
        "megapixels_per_second_excluding_warmup": rounded(megapixels / (wall - warmup), 6) if warmup else None,
        "tiles_per_second": rounded(tiles / wall, 6),
        "model_tflops_while_running": rounded(flops / forward_seconds / 1e12, 6) if forward_seconds else 0.0,
        "model_tflops_over_wall": rounded(flops / wall / 1e12, 6),
        "fraction_of_device_peak": rounded(flops / forward_seconds / 1e12 / peak) if forward_seconds and peak else None,
    }


def engine_as_run(reports: list[BlockReport], local_engine=None) -> dict:
    """``engine``: the engine as the block reports describe it: what ran, on whichever workers ran it.

    Each report carries its worker's engine (``Engine.describe()``); a figure all workers agree on
    is given as is, one they differ on as the distinct values joined by " + " (batch sizes
    chosen per tile shape are merged). Warm-up seconds add up over workers. With no block run (a
    resumed store with nothing left) the engine of this process stands in, if it was loaded."""
    per_worker = {r.worker: r.engine for r in reports if r.engine}  # a worker's last report is its latest state
    engines = list(per_worker.values())
    if not engines:
        if local_engine is None:
            return {"device": "none (no block ran)", "device_name": "none", "peak_tflops": None, "precision": "none",
                    "batch_size": "none", "torch_threads": 0, "compile_warmup_seconds": 0.0,
                    "gpu_busy_fraction": None, "gpus": [], "tactics": {},
                    "engines_reporting": 0}
        engines = [local_engine.describe()]

    def agreed(key):
        values = [e[key] for e in engines]
        if all(v == values[0] for v in values):
            return values[0]
        if all(isinstance(v, dict) for v in values):
            return {k: v for d in values for k, v in d.items()}
        return " + ".join(sorted({json.dumps(v) if isinstance(v, dict) else str(v) for v in values}))

    tactics = {}
    for e in engines:
        tactics.update(e["tactics"])
    peaks = {e["peak_tflops"] for e in engines}
    busy = [e["gpu_busy_fraction"] for e in engines if e.get("gpu_busy_fraction") is not None]
    return {
        "device": agreed("device"),
        "device_name": agreed("device_name"),
        "peak_tflops": peaks.pop() if len(peaks) == 1 else None,
        "precision": agreed("precision"),
        "batch_size": agreed("batch_size"),
        "torch_threads": agreed("torch_threads"),
        "compile_warmup_seconds": round(sum(e["compile_warmup_seconds"] for e in engines), 4),
        "gpu_busy_fraction": round(sum(busy) / len(busy), 4) if busy else None,  # the mean over the GPUs
        "gpus": gpus_used(per_worker),
        "tactics": tactics,
        "engines_reporting": len(per_worker) or 1,
    }


def gpus_used(per_worker: dict[str, dict]) -> list[dict]:
    """``engine.gpus``: each GPU that ran blocks, as its worker (``host:pid``) saw it (``GPU 1``
    where the worker was pinned to the host's second GPU), with that engine's busy fraction."""
    return [{"worker": worker, "gpu": e["gpu"], "device_name": e["device_name"],
             "busy_fraction": e["gpu_busy_fraction"]} for worker, e in sorted(per_worker.items()) if e.get("gpu")]


def environment_figures(device: str, workers_option, slots: int, scheduling) -> dict:
    """``environment``: the block tasks that could run at once (``slots``), how they were sized
    (:func:`tilepipe.sizing.sizing_note`), the scheduler, and this machine and its libraries."""
    return {
        "workers": slots,
        "sizing": sizing_note(device.split(":")[0], workers_option, slots),
        "scheduler": scheduling.describe(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
    }


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries a run's figures depend on, and GDAL's."""
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
