"""Defaults sized for the machine: how many tasks run at once in a process and how many threads read.

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


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or a SLURM job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def default_workers(device_type: str, cpus: int | None = None) -> int:
    cpus = cpu_count() if cpus is None else cpus
    return _clamp(cpus // 4, 2, 4) if device_type == "cuda" else 2


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
