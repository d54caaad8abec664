"""The device a run computes on: which one, at which precision, what it can do, and the one
process-wide torch switch the engine needs (cuDNN autotuning), held only around a forward pass.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import torch

from .errors import TilepipeError
from .modes import Precision
from .option_grammars import check_device

PRECISIONS = {Precision.FP32: None, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
"""The autocast dtype of each precision a run resolves to (None: no autocast)."""

PEAK_TFLOPS = (
    # (name fragment, dense bf16/fp16 tensor-core peak, fp32 peak), from NVIDIA's datasheets;
    # the first fragment found in torch.cuda.get_device_name() wins, so specific names come first.
    ("H100 PCIe", 756.0, 51.2), ("H100 NVL", 835.0, 60.0), ("H100", 989.4, 66.9), ("H200", 989.4, 66.9),
    ("A100", 312.0, 19.5), ("L40S", 362.1, 91.6), ("L4", 121.0, 30.3), ("A10", 125.0, 31.2),
    ("V100", 125.0, 15.7), ("T4", 65.0, 8.1),
)


def device_peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's dense peak for this precision, or None when unknown (and on CPUs)."""
    for fragment, half, single in PEAK_TFLOPS:
        if fragment in device_name:
            return single if precision == "fp32" else half
    return None


def parse_device(name: str) -> torch.device | None:
    """The device ``name`` names (None for ``auto``), without asking whether this machine has it:
    a config file written for a GPU machine still reads (and plans) on a laptop."""
    check_device(name)  # its text form: tilepipe.option_grammars
    return None if name == "auto" else torch.device(name)


def resolve_device(name: str) -> torch.device:
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TilepipeError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    return device


def resolve_precision(name: Precision, device: torch.device) -> Precision:
    if name == Precision.AUTO:
        if device.type == "cuda":
            return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
        return Precision.FP32
    if name not in PRECISIONS:
        raise TilepipeError(f"--precision {name!r}: choose {', '.join(Precision)}")
    if name == Precision.FP16 and device.type != "cuda":
        raise TilepipeError("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return name


def cuda_devices() -> list[str]:
    """The CUDA devices this process may use, named as a child process's ``CUDA_VISIBLE_DEVICES``
    must name them: the entries of this process's own ``CUDA_VISIBLE_DEVICES`` when it is set
    (indices or ``GPU-``/``MIG-`` UUIDs, as the user wrote them), else ``0`` to ``count - 1``.
    Empty without CUDA."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in listed.split(",")][:count]


def gpu_label(device: torch.device) -> str:
    """Which physical GPU a CUDA device of this process is, for the summary: ``GPU 1`` where a
    worker pinned with ``CUDA_VISIBLE_DEVICES=1`` sees it as ``cuda:0``."""
    visible = cuda_devices()
    index = device.index or 0
    return f"GPU {visible[index] if index < len(visible) else index}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


_autotuning_lock = threading.Lock()
_autotuning_users = 0
_autotuning_saved = False


@contextmanager
def cudnn_autotuning():
    """cuDNN's autotuner (``torch.backends.cudnn.benchmark``) on inside, the process's own setting
    back after: the flag is process-wide, and a library that sets it for good changes its host's
    convolutions. The first scope in saves the setting and the last one out restores it, so the
    scopes of engines running side by side in one process never switch it off under each other.

    Not ``torch.backends.cudnn.flags(benchmark=True)``: that also sets every other cuDNN flag to
    its own defaults, ``enabled=False`` among them. CPU kernels ignore the flag; the engine enters
    this scope on every device, so the CPU runs the same code path that CUDA does."""
    global _autotuning_users, _autotuning_saved
    with _autotuning_lock:
        if _autotuning_users == 0:
            _autotuning_saved = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
        _autotuning_users += 1
    try:
        yield
    finally:
        with _autotuning_lock:
            _autotuning_users -= 1
            if _autotuning_users == 0:
                torch.backends.cudnn.benchmark = _autotuning_saved
