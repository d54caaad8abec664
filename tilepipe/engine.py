"""Where a batch of tiles runs through the network. Which device and precision: :mod:`tilepipe.device`.

One :class:`Engine` per process wraps the loaded model on its device. Forward passes are
serialised by a lock: several block tasks may prepare tiles and write chunks at once, but only
one batch occupies the device (or the CPU's cores) at a time, which is what keeps a big model's
memory bounded and its kernels saturated. The engine always uses the channels_last memory format
and inference mode; on CUDA it adds bf16/fp16 autocast, cuDNN autotuning (switched on around each
forward pass and back after it, :func:`tilepipe.device.cudnn_autotuning`), pinned host memory and
non-blocking copies, and runs the network on a compute stream of its own: uploads (side stream)
and blending (on the stream of the thread that takes the probabilities) overlap it, and its time
is read from CUDA events rather than by synchronising the device (``forward_timing.py``).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .device import (PRECISIONS, cpu_name, cudnn_autotuning, device_peak_tflops, gpu_label, resolve_device,
                     resolve_precision)
from .engine_options import EngineOptions
from .errors import TilepipeError
from .forward_timing import DeviceBusyClock, ForwardTimer
from .model import LoadedModel, ModelSpec, cached_model


@dataclass
class DeviceBatch:
    """A batch on its way to the device: uploaded ahead of time, ready once ``ready`` fires."""

    images: torch.Tensor
    valid: torch.Tensor
    count: int
    ready: object = None  # a torch.cuda.Event on CUDA
    scaling: tuple[torch.Tensor, torch.Tensor] | None = None
    """``(low, span)`` on the device when ``images`` holds raw source values, else None."""
    clip: bool = True
    """Clip scaled values to [0, 1] (False for a model card's mean/std scaling)."""


@dataclass(frozen=True)
class Prediction:
    """One forward pass, queued: its probabilities, its timer, and on CUDA ``ready``, the event
    recorded on the compute stream once the probabilities are written.

    The pass is queued by the thread that feeds the network, but the probabilities are blended
    in another (a task's stitch lane), and CUDA orders work per stream, not per thread: the
    thread that uses them calls :meth:`take`, which orders *its* current stream after ``ready``
    (waiting in the queuing thread would order only that thread's stream)."""

    probabilities: torch.Tensor
    timer: ForwardTimer
    ready: object = None  # a torch.cuda.Event on CUDA; None on a CPU, where the pass is over on return

    def take(self) -> torch.Tensor:
        """The probabilities, safe to use on this thread's current stream (their memory is not
        reused until the work queued on that stream so far is done)."""
        if self.ready is not None:
            stream = torch.cuda.current_stream(self.probabilities.device)
            self.ready.wait(stream)
            self.probabilities.record_stream(stream)
        return self.probabilities


class Engine:
    """Runs batches of tiles through the network and returns class probabilities on the device.

    ``upload`` (called ahead of time, from a block's prefetch thread) pins the batch and copies it
    to the device on a side CUDA stream; ``queue`` (serialised by a lock) makes the compute
    stream wait for that copy, normalises on the device and queues the network, so host-to-device
    copies overlap compute. It returns a :class:`Prediction` without waiting for the device unless
    ``MAX_PASSES_IN_FLIGHT`` passes are already queued, which bounds the device memory that
    queued batches and their probabilities hold."""

    AUTO_CPU_BATCH = 4
    AUTO_MAX_BATCH = 64
    MAX_PASSES_IN_FLIGHT = 2
    """Queued-but-unfinished passes: two keep the device fed while the host queues the third."""
    DEVICE_SCALED_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.float32))
    """Source dtypes torch moves and converts in full: tiles of these go to a GPU as they are read."""

    def __init__(self, model: LoadedModel, options: EngineOptions):
        if options.batch_size != "auto" and (not isinstance(options.batch_size, int) or options.batch_size < 1):
            raise TilepipeError(f"--batch-size {options.batch_size!r} must be a positive integer or auto")
        self.model = model
        self.options = options
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        self.cuda = self.device.type == "cuda"
        self.device_name = torch.cuda.get_device_name(self.device) if self.cuda else cpu_name()
        self.tactics = {"inference_mode": True, "channels_last": True}
        # channels_last (NHWC) suits both cuDNN's tensor-core kernels and oneDNN's CPU convolutions
        module = on_device(model.module, self.device).to(memory_format=torch.channels_last)
        if self.cuda:
            self.copy_stream = torch.cuda.Stream(self.device)
            self.compute_stream = torch.cuda.Stream(self.device)
            self.tactics.update(cudnn_benchmark=True, pinned_memory=True, non_blocking_copies=True,
                                event_timing=True)
        if self.precision != "fp32":
            self.tactics["mixed_precision"] = self.precision
        if options.compile:
            module = torch.compile(module)
            self.tactics["compile"] = True
        self.module = module
        self.mean = torch.tensor(model.mean, dtype=torch.float32, device=self.device)[None, :, None, None]
        self.std = torch.tensor(model.std, dtype=torch.float32, device=self.device)[None, :, None, None]
        self._lock = threading.Lock()
        self._batch_sizes: dict[tuple[int, int], int] = {}
        self._scaling_terms: dict = {}
        self._warm: set[tuple[int, ...]] = set()
        self._in_flight: deque = deque()  # end events of the passes queued on the compute stream
        self.busy_clock = DeviceBusyClock()
        self.warmup_seconds = 0.0
        if self.cuda:  # once: the weights and constants were copied on the default stream, which
            torch.cuda.synchronize(self.device)  # the compute stream does not wait for

    def batch_size_for(self, height: int, width: int, held: int = 0, held_per_tile: int = 0) -> int:
        """The batch size for this tile shape (fixed, or chosen once per shape when ``auto``).
        ``held`` and ``held_per_tile``: device bytes the caller keeps besides a forward pass, in
        all and per tile of a batch (:func:`tilepipe.stream.held_bytes`), which ``auto`` leaves free."""
        if self.options.batch_size != "auto":
            return self.options.batch_size
        shape = (height, width)
        if shape not in self._batch_sizes:
            with self._lock:
                self._batch_sizes[shape] = (self._auto_batch(height, width, held, held_per_tile) if self.cuda
                                            else self.AUTO_CPU_BATCH)
        return self._batch_sizes[shape]

    def _auto_batch(self, height: int, width: int, held: int = 0, held_per_tile: int = 0) -> int:
        probe = 2
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self._forward(torch.zeros((probe, self.model.in_channels, height, width), device=self.device))
        torch.cuda.synchronize(self.device)
        # the probe's peak, plus the float32 probabilities a pass returns, which outlive it
        per_tile = max((torch.cuda.max_memory_allocated(self.device) - base) / probe, 1)
        per_tile += self.model.num_classes * height * width * 4 + held_per_tile
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(1, min(self.AUTO_MAX_BATCH, (0.6 * free - held) // per_tile)))

    def scales_on_device(self, dtype) -> bool:
        """Whether tiles of this source dtype should travel unscaled and be scaled on the device:
        on CUDA, for the dtypes torch handles in full. Raw uint8 is a quarter of the float32 bytes
        to pin and copy, and the host skips four float passes per tile. On a CPU the scaling stays
        in the block tasks, which run in parallel, rather than under the forward lock."""
        return self.cuda and np.dtype(dtype) in self.DEVICE_SCALED_DTYPES

    def _terms(self, scaling) -> tuple[torch.Tensor, torch.Tensor]:
        if scaling not in self._scaling_terms:
            low, span = scaling.terms()
            self._scaling_terms[scaling] = (torch.from_numpy(low).to(self.device),
                                            torch.from_numpy(span).to(self.device))
        return self._scaling_terms[scaling]

    def upload(self, images: np.ndarray, valid: np.ndarray, scaling=None) -> DeviceBatch:
        """Start moving a batch to the device: (N, channels, h, w) float32, scaled, and (N, h, w) bool;
        or, with ``scaling`` (the source's :class:`IntensityScaling`), (N, bands, h, w) raw source
        values that ``queue`` scales on the device, exactly as ``scaling.apply`` does."""
        count = len(images)
        if self.options.compile:  # one input shape per tile shape, so the compiled graph is reused
            pad = self.batch_size_for(*images.shape[-2:]) - count
            if pad > 0:
                images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
                valid = np.concatenate([valid, np.zeros((pad, *valid.shape[1:]), valid.dtype)])
        x, keep = torch.from_numpy(images), torch.from_numpy(valid)
        clip = scaling is None or scaling.clip
        if not self.cuda:
            return DeviceBatch(x, keep, count, scaling=self._terms(scaling) if scaling is not None else None,
                               clip=clip)
        x, keep = x.pin_memory(), keep.pin_memory()
        with torch.cuda.stream(self.copy_stream):  # the scaling terms' first copy is ordered before ``ready`` too
            terms = self._terms(scaling) if scaling is not None else None
            batch = DeviceBatch(x.to(self.device, non_blocking=True), keep.to(self.device, non_blocking=True), count,
                                torch.cuda.Event(), terms, clip)
            batch.ready.record(self.copy_stream)
        return batch

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = PRECISIONS[self.precision]
        with cudnn_autotuning(), torch.inference_mode(), \
                torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.module(x.contiguous(memory_format=torch.channels_last))["out"]

    def predict(self, batch: DeviceBatch) -> tuple[torch.Tensor, ForwardTimer]:
        """:meth:`queue` the batch and take its probabilities in this thread: (N, classes, h, w)
        float32 on the device, ready for this thread's current stream, and the pass's timer."""
        prediction = self.queue(batch)
        return prediction.take(), prediction.timer

    def queue(self, batch: DeviceBatch) -> Prediction:
        """Queue the network on ``batch`` and return at once (on CUDA) with the pass's
        :class:`Prediction`: whichever thread uses the probabilities takes them through it. A
        compiled model's first pass per shape is warm-up: timed on the host, compilation
        included, and counted in ``warmup_seconds``; its timer reads 0."""
        with self._lock:
            start = time.perf_counter()
            shape = tuple(batch.images.shape)
            warmup = self.options.compile and shape not in self._warm
            self._warm.add(shape)
            if not self.cuda:
                probs = self._probabilities(batch)
                return Prediction(probs, self._host_timer(time.perf_counter() - start, warmup))
            while len(self._in_flight) >= self.MAX_PASSES_IN_FLIGHT:
                self._in_flight.popleft().synchronize()  # an older pass: the device keeps the newer one
            stream = self.compute_stream
            began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(stream):
                stream.wait_event(batch.ready)
                batch.images.record_stream(stream)  # allocated on the copy stream, read on this one
                batch.valid.record_stream(stream)
                began.record(stream)
                probs = self._probabilities(batch)
                ended.record(stream)
            self._in_flight.append(ended)
            if warmup:
                ended.synchronize()
                return Prediction(probs, self._host_timer(time.perf_counter() - start, True), ended)
            return Prediction(probs, self.busy_clock.register(ForwardTimer(start=began, end=ended)), ended)

    def _host_timer(self, seconds: float, warmup: bool) -> ForwardTimer:
        if warmup:
            self.warmup_seconds += seconds
        return ForwardTimer.done(seconds, warmup)

    def _probabilities(self, batch: DeviceBatch) -> torch.Tensor:
        """Invalid pixels enter the network as exact zeros (the normalisation mean), the value a
        convolution's zero padding uses at the image border. They are selected with
        ``torch.where``, not multiplied by 0: whatever an invalid pixel holds (NaN, Inf), it must
        not reach the network, whose image pooling would spread it over the tile."""
        x, keep = batch.images, batch.valid
        if batch.scaling is not None:
            low, span = batch.scaling
            x = (x.float() - low) / span
            if batch.clip:
                x = x.clamp_(0.0, 1.0)
            if x.shape[1] == 1 and self.model.in_channels == 3:  # one band feeds three channels
                x = x.expand(-1, 3, -1, -1)
        x = torch.where(keep[:, None], (x - self.mean) / self.std, 0.0)
        logits = self._forward(x)
        return torch.softmax(logits[: batch.count].float(), dim=1).contiguous()  # NCHW planes for blending

    def describe(self) -> dict:
        return {
            "device": str(self.device),
            "device_name": self.device_name,
            "gpu": gpu_label(self.device) if self.cuda else None,
            "peak_tflops": device_peak_tflops(self.device_name, self.precision) if self.cuda else None,
            "precision": self.precision,
            "batch_size": self.options.batch_size if self.options.batch_size != "auto" else
            {f"{h}x{w}": b for (h, w), b in self._batch_sizes.items()} or "auto",
            "torch_threads": torch.get_num_threads(),
            "compile_warmup_seconds": round(self.warmup_seconds, 4),
            "gpu_busy_fraction": _round(self.busy_clock.busy_fraction() if self.cuda else None),
            "tactics": dict(self.tactics),
        }


def on_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The network an engine on ``device`` runs: the loaded module itself on the CPU (where
    :func:`tilepipe.model.load_model` puts it), anywhere else a copy made there.

    ``Module.to`` moves a module in place and returns it, and the loaded model is shared by
    every engine of the process (:func:`tilepipe.model.cached_model`): moving it for a CUDA engine
    would move the CPU engine's network too, which then ran on CUDA weights. The copy's parameters
    and buffers are created straight on the device (handed to ``deepcopy`` through its memo), so
    the host never holds a second set of weights on the way."""
    if device.type == "cpu":
        return module
    memo = {}
    for tensor in (*module.parameters(), *module.buffers()):
        moved = tensor.detach().to(device)
        memo[id(tensor)] = torch.nn.Parameter(moved, tensor.requires_grad) if isinstance(
            tensor, torch.nn.Parameter) else moved
    return copy.deepcopy(module, memo)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@lru_cache(maxsize=2)
def cached_engine(model_spec: ModelSpec, options: EngineOptions) -> Engine:
    """One engine (one model on one device) per process."""
    return Engine(cached_model(model_spec), options)
