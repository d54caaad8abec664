"""How long the network held the device, measured without stalling it.

On a CPU a forward pass is over when the call returns, so ``time.perf_counter`` around it is the
truth. On CUDA the call only queues kernels. Waiting for them with ``torch.cuda.synchronize()``
inside the engine's lock would wait for *every* stream of the device: the next batch's upload on
the copy stream and other blocks' blending would be charged to the network, and no thread could
queue the next pass until the device had drained, leaving it idle between batches. Instead the
engine records a pair of CUDA events on its compute stream around each pass, and the seconds
between them are read later (:attr:`ForwardTimer.seconds`), once the block has queued its
blending and needs its labels anyway.

The same events give the steady state's *device busy fraction*: the passes' own seconds over the
device time from the end of the first pass (lazy initialisation, cuDNN's first autotuning) to the
end of the last. The passes run one after another on one stream, so they never overlap and the
fraction cannot exceed 1. What it measures is the time the network held its stream; idle gaps
*inside* a pass, when the host launches kernels more slowly than the device runs them, count as
busy (NVML's utilisation, sampled by ``benchmarks/throughput.py`` where pynvml exists, says how
much of that time a kernel actually ran).
"""

from __future__ import annotations

import threading


class ForwardTimer:
    """The seconds one forward pass held the device; on CUDA read from its events when asked."""

    __slots__ = ("_clock", "start", "end", "steady", "warmup", "_seconds")

    def __init__(self, clock: DeviceBusyClock | None = None, start=None, end=None, seconds: float | None = None,
                 warmup: bool = False):
        self._clock, self.start, self.end = clock, start, end
        self.steady, self.warmup, self._seconds = False, warmup, seconds

    @classmethod
    def done(cls, seconds: float, warmup: bool = False) -> ForwardTimer:
        """A pass already timed on the host (CPU, or a compiled model's warm-up)."""
        return cls(seconds=seconds, warmup=warmup)

    @property
    def seconds(self) -> float:
        """Seconds charged to the network: 0 for a warm-up pass (counted apart by the engine).
        On CUDA the first read waits for this pass's end event only, not for the device."""
        if self._seconds is None:
            self._clock.resolve(self)
        return 0.0 if self.warmup else self._seconds


class DeviceBusyClock:
    """The device-time ledger of one engine: every CUDA forward pass registers here, in the order
    it was queued on the compute stream (the engine registers under its lock)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._origin = None  # end event of the first pass: the steady state starts there
        self._unresolved: list[ForwardTimer] = []
        self.busy_seconds = 0.0
        self.span_seconds = 0.0
        self.passes = 0

    def register(self, timer: ForwardTimer) -> ForwardTimer:
        with self._lock:
            timer._clock = self
            if self._origin is None:
                self._origin = timer.end
            else:
                timer.steady = True
            self._unresolved.append(timer)
        return timer

    def resolve(self, timer: ForwardTimer) -> None:
        timer.end.synchronize()  # this pass only: later passes and other streams keep running
        with self._lock:
            if timer._seconds is not None:  # another thread got here first
                return
            timer._seconds = timer.start.elapsed_time(timer.end) / 1e3
            self._unresolved.remove(timer)
            self.passes += 1
            if timer.steady:
                self.busy_seconds += timer._seconds
                self.span_seconds = max(self.span_seconds, self._origin.elapsed_time(timer.end) / 1e3)

    def reset(self) -> None:
        """Start a new steady state (a new run on the same engine): passes still running are
        accounted to the old one first."""
        self.busy_fraction()
        with self._lock:
            self._origin, self.busy_seconds, self.span_seconds, self.passes = None, 0.0, 0.0, 0

    def busy_fraction(self) -> float | None:
        """Steady-state busy fraction over every pass so far (waits for those still running);
        None before there are two passes to measure between."""
        with self._lock:
            pending = list(self._unresolved)
        for timer in pending:
            if timer._seconds is None:
                self.resolve(timer)
        with self._lock:
            return self.busy_seconds / self.span_seconds if self.span_seconds > 0 else None
