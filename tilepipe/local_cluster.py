"""The LocalCluster a ``--cluster local[:N]`` run starts: one single-threaded worker process per
slot, and on a GPU host each of them pinned to one GPU.

A worker process sees only the GPU its ``CUDA_VISIBLE_DEVICES`` names (set by its nanny before the
process starts, so before CUDA initialises) and declares one ``GPU`` resource; every task asks for
one, so each GPU runs one task, and one model, at a time. Workers are given the host's GPUs round
robin: ``local`` means one worker per GPU, ``local:N`` with N above the GPU count puts several on
a GPU. This is what dask-cuda's ``LocalCUDACluster`` does; tilepipe does it itself because
dask-cuda pins its own versions of dask and distributed (RAPIDS releases), and because a run on
a CPU host, or with ``--device cpu``, must start the same cluster without pins.
"""

from __future__ import annotations

from distributed import LocalCluster
from distributed.system import MEMORY_LIMIT

from .device import cuda_devices, parse_device
from .errors import TilepipeError


def gpus_to_pin(device: str) -> list[str]:
    """The GPUs to spread workers over for a run on ``device``: this host's for ``auto`` and
    ``cuda``; none for the CPU, and none for an explicit ``cuda:N`` (a pinned worker would see its
    GPU as ``cuda:0``, so every worker uses the one asked for instead)."""
    parsed = parse_device(device)
    if parsed is not None and (parsed.type != "cuda" or parsed.index is not None):
        return []
    return cuda_devices()


def worker_pins(workers: int | None, gpus: list[str]) -> list[dict]:
    """Per worker process, the options that pin it: ``env`` (its ``CUDA_VISIBLE_DEVICES``) and
    ``resources`` (``GPU=1``), the GPUs taken round robin; ``{}`` for each worker without GPUs.
    ``workers`` None (``--cluster local``) means one per GPU."""
    count = len(gpus) if workers is None else workers
    if count == 0:
        raise TilepipeError("--cluster local starts one worker per GPU, and this run has no CUDA device to use; "
                            "give the number of workers: local:N")
    if not gpus:
        return [{} for _ in range(count)]
    return [{"env": {"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]}, "resources": {"GPU": 1}} for k in range(count)]


class PinnedLocalCluster(LocalCluster):
    """A LocalCluster whose k-th worker gets ``pins[k]`` on top of the common worker options, set
    through ``new_worker_spec`` (the hook SpecCluster documents for per-worker specs)."""

    def __init__(self, pins: list[dict], env: dict[str, str]):
        self.pins = pins
        super().__init__(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=":0", env=env,
                         memory_limit=MEMORY_LIMIT // len(pins))  # what LocalCluster gives N workers itself
        self.scale(len(pins))
        self.wait_for_workers(len(pins))

    def new_worker_spec(self) -> dict:
        (name, spec), = super().new_worker_spec().items()
        pin = self.pins[name]
        options = spec["options"]
        return {name: {**spec, "options": {**options, **pin,
                                           "env": {**options.get("env", {}), **pin.get("env", {})}}}}
