"""Where a batch of tiles runs through the network.

One :class:`Engine` per process wraps the loaded model on its device. Forward passes are
serialised by a lock: several block tasks may prepare tiles and write chunks at once, but only
one batch occupies the device (or the CPU's cores) at a time, which is what keeps a big model's
memory bounded and its kernels saturated. The engine always uses the channels_last memory format
and inference mode; on CUDA it adds bf16/fp16 autocast, cuDNN autotuning, pinned host memory and
non-blocking copies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .errors import TilepipeError
from .model import LoadedModel, ModelSpec, cached_model

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

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


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 4


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TilepipeError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TilepipeError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if name not in PRECISIONS:
        raise TilepipeError(f"--precision {name!r}: choose auto, fp32, bf16 or fp16")
    if name == "fp16" and device.type != "cuda":
        raise TilepipeError("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return name


class Engine:
    """Runs batches of normalised-ready tiles and returns class probabilities on the device."""

    def __init__(self, model: LoadedModel, options: EngineOptions):
        if options.batch_size < 1:
            raise TilepipeError(f"--batch-size {options.batch_size} must be at least 1")
        self.model = model
        self.batch_size = options.batch_size
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        self.cuda = self.device.type == "cuda"
        self.device_name = torch.cuda.get_device_name(self.device) if self.cuda else _cpu_name()
        self.tactics = {"inference_mode": True, "batching": self.batch_size > 1, "channels_last": True}
        # channels_last (NHWC) suits both cuDNN's tensor-core kernels and oneDNN's CPU convolutions
        module = model.module.to(self.device).to(memory_format=torch.channels_last)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            self.tactics.update(cudnn_benchmark=True, pinned_memory=True, non_blocking_copies=True)
        if self.precision != "fp32":
            self.tactics["mixed_precision"] = self.precision
        self.module = module
        self.mean = torch.tensor(model.mean, dtype=torch.float32, device=self.device)[None, :, None, None]
        self.std = torch.tensor(model.std, dtype=torch.float32, device=self.device)[None, :, None, None]
        self._lock = threading.Lock()

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.cuda:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def predict(self, images: np.ndarray, valid: np.ndarray) -> tuple[torch.Tensor, float]:
        """``images`` (N, 3, h, w) float32 in [0, 1], ``valid`` (N, h, w) bool.

        Returns softmax probabilities (N, classes, h, w) float32 on the device and the seconds the
        forward pass held the device. Invalid pixels enter the network as the normalisation mean
        (zero), the same value a convolution's zero padding uses at the image border.
        """
        with self._lock:
            start = time.perf_counter()
            x = self._to_device(images)
            keep = self._to_device(valid)[:, None]
            x = (((x - self.mean) / self.std) * keep).contiguous(memory_format=torch.channels_last)
            dtype = PRECISIONS[self.precision]
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                logits = self.module(x)["out"]
            probs = torch.softmax(logits.float(), dim=1).contiguous()  # NCHW: per-class planes for blending
            if self.cuda:
                torch.cuda.synchronize(self.device)
            return probs, time.perf_counter() - start

    def describe(self) -> dict:
        return {
            "device": str(self.device),
            "device_name": self.device_name,
            "peak_tflops": device_peak_tflops(self.device_name, self.precision) if self.cuda else None,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "torch_threads": torch.get_num_threads(),
            "tactics": dict(self.tactics),
        }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


@lru_cache(maxsize=2)
def cached_engine(model_spec: ModelSpec, options: EngineOptions) -> Engine:
    """One engine (one model on one device) per process."""
    return Engine(cached_model(model_spec), options)
