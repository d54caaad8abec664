"""Sizes for the machine: how many tasks run at once in a process, how many threads read, and
the peak memory a plan is estimated to need (``tilepipe plan``).

The rule, stated once (README "Options", and ``environment.sizing`` in the summary):

* **tasks at once** (``--workers auto``): on a CPU device 2, because the forward pass already uses
  every core through torch's own threads and a second task only has to fill the gaps (reading,
  blending, writing); on CUDA ``clamp(cpus // 4, 2, 4)``, so that while one task holds the GPU
  the others blend and compress on the host.
* **reader threads** (per process, shared by its tasks: windowed reads, cutting, scaling,
  pinning, uploading): on a CPU device ``clamp(cpus // 2, 1, 4)``, leaving most cores to the
  network; on CUDA ``clamp(cpus - 2, 2, 16)``, since the host does little else there (two cores
  left for the task threads) and a 16-core GPU host must not be fed by two threads.
"""

from __future__ import annotations

import os

import numpy as np

from .device import parse_device, resolve_device
from .options import RunOptions
from .partition import Plan
from .stream import PREFETCH, READ_AHEAD, STITCH_BEHIND, rows_per_read


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or a SLURM job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def default_workers(device_type: str) -> int:
    cpus = cpu_count()
    return _clamp(cpus // 4, 2, 4) if device_type == "cuda" else 2


def resolved_workers(options: RunOptions) -> int:
    """``--workers auto``: :func:`default_workers` for the device this run will use. The device
    named is taken as present (a plan, or a client sending work to GPU workers, needs no GPU of
    its own); only ``auto`` asks this machine."""
    if options.workers != "auto":
        return options.workers
    return default_workers((parse_device(options.device) or resolve_device("auto")).type)


def reader_threads(device_type: str, cpus: int | None = None) -> int:
    cpus = cpu_count() if cpus is None else cpus
    if device_type == "cuda":
        return _clamp(cpus - 2, 2, 16)
    return _clamp(cpus // 2, 1, 4)


def sizing_note(device_type: str, requested, workers: int) -> dict:
    """What the summary states: the tasks and reader threads this process used, and why."""
    cpus = cpu_count()
    rule = ("auto: 2 tasks on a CPU device, clamp(cpus // 4, 2, 4) on CUDA" if requested == "auto"
            else f"--workers {requested}")
    return {"cpus": cpus, "tasks_at_once": workers, "tasks_rule": rule,
            "reader_threads": reader_threads(device_type, cpus),
            "reader_threads_rule": "clamp(cpus // 2, 1, 4) on a CPU device, clamp(cpus - 2, 2, 16) on CUDA"}


RUNTIME_BYTES = 800 * 2**20
"""Resident size of Python with torch, torchvision, rasterio, zarr and dask imported (measured:
774 MB with the CUDA build of torch 2.15 on Linux x86-64)."""


def estimate_peak_memory(p: Plan, source, options: RunOptions, num_classes: int, parameters: int) -> float:
    """Bytes, roughly: the runtime, the model weights, plus per concurrent task its reads in flight
    (a few tile rows of a strip each), its open rows (``classes x tile height x strip width`` float32, with the weights),
    the final rows of one block, its batches, plus one batch of network activations.

    The activation figure (about 60 float32 values per tile pixel for DeepLabV3-ResNet101 at
    stride 8, 3 for the stand-in) is an empirical allowance, not an exact count."""
    unit = p.unit(0 if p.depth else None, 0, 0, p.bands)
    read_rows = min(unit.core.height + p.tile_height, p.tile_height + (rows_per_read(p, source) - 1) * p.grid.stride)
    row_read = read_rows * unit.row_window(unit.tile_rows[0]).width
    bands, itemsize = len(source.bands), np.dtype(source.dtype).itemsize
    tile_px = p.tile_height * p.tile_width
    batch = 4 if options.batch_size == "auto" else options.batch_size  # auto sizes itself to the free GPU memory
    strip = min(p.strip_width, p.width)
    open_rows = (num_classes + 1) * p.tile_height * strip * 4
    block_rows = p.chunk_size * strip * (2 + (num_classes if options.probabilities else 0))
    # batches being cut and uploaded, and probabilities queued in the stitch lane
    batches = (PREFETCH + 1) * batch * tile_px * (3 * 4 + 1) + (STITCH_BEHIND + 1) * batch * num_classes * tile_px * 4
    per_task = (READ_AHEAD + 2) * row_read * (bands * itemsize + 1) + open_rows + block_rows + batches
    output_stride = p.grid.output_stride
    activations_per_px = 3 if options.model == "standin" else 60 * (8 / output_stride) ** 0.5
    activations = batch * tile_px * activations_per_px * 4
    workers = resolved_workers(options)
    return RUNTIME_BYTES + parameters * 4 + workers * per_task + activations
