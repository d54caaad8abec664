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
busy (NVML's utilisation, sampled by ``benchmarks/measure.py`` where pynvml exists, says how
much of that time a kernel actually ran).
"""

from __future__ import annotations

import threading


class ForwardTimer:
    """The seconds one forward pass held the device; on CUDA read from its events when asked."""

    __slots__ = ("_clock", "start", "end", "steady", "warmup", "generation", "_seconds")

    def __init__(self, start=None, end=None, seconds: float | None = None, warmup: bool = False):
        self._clock, self.start, self.end = None, start, end
        self.steady, self.warmup, self.generation, self._seconds = False, warmup, 0, seconds

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
    it was queued on the compute stream (the engine registers under its lock). An engine serves
    every run of its process (a notebook, a long-lived Dask worker), so the ledger starts afresh
    when a block of a new run begins: the idle time between runs is no run's."""

    def __init__(self):
        self._lock = threading.Lock()
        self._run = None
        self._generation = 0
        self._origin = None  # end event of the run's first pass: the steady state starts there
        self.busy_seconds = 0.0
        self.span_seconds = 0.0
        self.passes = 0

    def begin_run(self, run_id: str) -> None:
        with self._lock:
            if run_id != self._run:
                self._run, self._generation, self._origin = run_id, self._generation + 1, None
                self.busy_seconds = self.span_seconds = 0.0
                self.passes = 0

    def register(self, timer: ForwardTimer) -> ForwardTimer:
        with self._lock:
            timer._clock, timer.generation = self, self._generation
            if self._origin is None:
                self._origin = timer.end
            else:
                timer.steady = True
        return timer

    def resolve(self, timer: ForwardTimer) -> None:
        timer.end.synchronize()  # this pass only: later passes and other streams keep running
        with self._lock:
            if timer._seconds is not None:  # another thread got here first
                return
            timer._seconds = timer.start.elapsed_time(timer.end) / 1e3
            if timer.generation != self._generation:  # an earlier run's pass, read late
                return
            self.passes += 1
            if timer.steady:
                self.busy_seconds += timer._seconds
                self.span_seconds = max(self.span_seconds, self._origin.elapsed_time(timer.end) / 1e3)

    def busy_fraction(self) -> float | None:
        """This run's steady-state busy fraction over the passes read so far (each block reads its
        own before it reports, so nothing here waits); None before two passes were read."""
        with self._lock:
            return self.busy_seconds / self.span_seconds if self.span_seconds > 0 else None
