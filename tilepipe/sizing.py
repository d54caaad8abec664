"""Sizes for the machine: how many tasks run at once in a process, how many threads read, the
peak memory a plan is estimated to need (``tilepipe plan``), and when freed memory goes back.

The rule, stated once (the docs' options reference, and ``environment.sizing`` in the summary):

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

import ctypes
import os
import platform
from typing import TYPE_CHECKING

import numpy as np

from .device import parse_device, resolve_device
from .partition import Plan
from .stream import READ_AHEAD, held_bytes, rows_per_read

if TYPE_CHECKING:  # annotations only: the options sit above this module (tests/test_layers.py)
    from .options import RunOptions


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


LARGE_ALLOCATION = 4 * 2**20
"""Blocks from this size up are mapped and unmapped one by one (glibc's ``M_MMAP_THRESHOLD``)."""
M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def return_large_frees() -> bool:
    """Have glibc hand freed blocks of ``LARGE_ALLOCATION`` bytes and more back to the system at
    once. A run allocates and frees blocks of 1 to 32 MB all the time (batches, tile-row reads, a
    unit's blending buffers) from several threads. By default glibc raises its mmap threshold to
    the largest such block freed (up to 32 MB), after which they come from per-thread arenas,
    each keeping up to twice that free: measured 1.27 GB peak RSS on a 128-slice series of 512
    px with 21 classes with this, 1.53 to 1.58 GB without (``benchmarks/series_memory.py``).
    Process-wide and one-way (glibc has no getter to restore the dynamic threshold), so the entry
    point calls it once (:func:`tilepipe.run`); a ``MALLOC_MMAP_THRESHOLD_`` environment variable
    wins, and it does nothing where the C library is not glibc. Returns whether it applied."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.system() != "Linux":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION))
    except (OSError, AttributeError):  # a C library without mallopt
        return False


RUNTIME_BYTES = 800 * 2**20
"""Resident size of Python with torch, torchvision, rasterio, zarr and dask imported (measured:
774 MB with the CUDA build of torch 2.15 on Linux x86-64)."""


NETWORK_FLOATS = {8: (149, 24), 16: (44, 15)}
"""DeepLabV3-ResNet101 on a CPU, by output stride: float32 values per pixel of one tile that a
forward pass holds once whatever the batch (the backend's scratch), and per pixel of each tile of
the batch. Measured, not counted (peak RSS rise of one pass, 1 and 4 tiles of 512 px, 21 classes:
237 and 532 MiB at stride 8, 131 and 393 MiB at 16), less the engine's planes below."""


def forward_bytes(model: str, num_classes: int, output_stride: int, batch: int, tile_px: int) -> float:
    """Bytes one forward pass holds at its peak: the network's activations and scratch
    (:data:`NETWORK_FLOATS`; the stand-in has its 8 hidden channels), plus what the engine makes
    of each tile's output (logits, softmax and its contiguous copy: three ``classes``-deep planes)
    and input (three 3-channel planes: scaled, normalised, selected). The smaller networks are
    given ResNet-101's allowance at their stride (at stride 8 if they have another), an
    overestimate."""
    once, per_tile = (0, 8) if model == "standin" else NETWORK_FLOATS.get(output_stride, NETWORK_FLOATS[8])
    return tile_px * 4 * (once + batch * (per_tile + 3 * num_classes + 9))


def estimate_peak_memory(p: Plan, source, options: RunOptions, num_classes: int, parameters: int) -> float:
    """Bytes, roughly: the runtime, the model weights, one forward pass (one runs at a time in a
    process, :func:`forward_bytes`), and per concurrent task what its stream holds
    (:func:`tilepipe.stream.held_bytes`: the accumulators of the one unit it blends, batches
    ahead, probabilities not yet blended), its reads in flight (a few tile rows of a strip each)
    and the final rows of one block. Nothing here grows with the number of slices or units."""
    unit = p.unit(0 if p.depth else None, 0, 0, p.bands)
    read_rows = min(unit.core.height + p.tile_height, p.tile_height + (rows_per_read(p, source) - 1) * p.grid.stride)
    row_read = read_rows * unit.row_window(unit.tile_rows[0]).width
    bands, itemsize = len(source.bands), np.dtype(source.dtype).itemsize
    tile_px = p.tile_height * p.tile_width
    batch = 4 if options.batch_size == "auto" else options.batch_size  # auto sizes itself to the free GPU memory
    strip = min(p.strip_width, p.width)
    fixed, per_tile = held_bytes(p, num_classes, 3 * 4)  # tiles scaled on the host: 3 float32 channels
    block_rows = p.chunk_size * strip * (2 + (num_classes if options.probabilities else 0))
    per_task = (READ_AHEAD + 2) * row_read * (bands * itemsize + 1) + fixed + batch * per_tile + block_rows
    forward = forward_bytes(options.model, num_classes, p.grid.output_stride, batch, tile_px)
    return RUNTIME_BYTES + parameters * 4 + resolved_workers(options) * per_task + forward
