"""The device-time ledger, on the CPU: CUDA events are stood in for by events whose device clock
is given, so the lazy reading and the steady-state busy fraction are checked against hand-counted
figures. (On a GPU, tests/test_cuda.py checks the real events.)"""

from __future__ import annotations

import numpy as np
import pytest

from tilepipe.engine import Engine, EngineOptions
from tilepipe.forward_timing import DeviceBusyClock, ForwardTimer
from tilepipe.model import ModelSpec, load_model


class ClockEvent:
    """A stand-in for ``torch.cuda.Event(enable_timing=True)`` recorded at device time ``at`` (s)."""

    def __init__(self, at: float):
        self.at, self.waited = at, False

    def synchronize(self) -> None:
        self.waited = True

    def elapsed_time(self, end: ClockEvent) -> float:
        return (end.at - self.at) * 1e3  # milliseconds, as CUDA reports


def queue(clock: DeviceBusyClock, start: float, end: float) -> ForwardTimer:
    return clock.register(ForwardTimer(start=ClockEvent(start), end=ClockEvent(end)))


def test_seconds_are_read_lazily_and_only_wait_for_their_own_pass():
    clock = DeviceBusyClock()
    first, second = queue(clock, 0.0, 1.0), queue(clock, 1.0, 1.25)
    assert not first.end.waited and not second.end.waited  # queueing waits for nothing
    assert second.seconds == pytest.approx(0.25)
    assert second.end.waited and not first.end.waited
    assert first.seconds == pytest.approx(1.0)


def test_busy_fraction_of_the_steady_state():
    """The first pass (lazy start-up) is left out; the steady state runs from its end (t=2) to the
    last end (t=10): passes of 3 + 2 + 1 s in 8 s, with the device idle 1 s and 1 s between them.
    Blocks read their own timers, in any order; the fraction counts what has been read."""
    clock = DeviceBusyClock()
    clock.begin_run("a")
    timers = [queue(clock, 0.0, 2.0), queue(clock, 2.0, 5.0), queue(clock, 6.0, 8.0), queue(clock, 9.0, 10.0)]
    assert clock.busy_fraction() is None  # nothing read yet, and reading the fraction waits for nothing
    assert not any(t.end.waited for t in timers)
    for t in (timers[2], timers[0], timers[3], timers[1]):
        t.seconds
    assert clock.busy_fraction() == pytest.approx(6.0 / 8.0)
    assert clock.passes == 4


def test_a_new_run_starts_a_new_steady_state():
    """An engine serves several runs in one process: the idle time between them is no run's, and
    a pass of the old run read late does not count in the new one."""
    clock = DeviceBusyClock()
    clock.begin_run("a")
    late = [queue(clock, 0.0, 1.0), queue(clock, 1.0, 2.0)]
    clock.begin_run("b")
    clock.begin_run("b")  # every block of the run says so; only the first one restarts the ledger
    timers = [queue(clock, 100.0, 101.0), queue(clock, 101.0, 101.5), queue(clock, 102.0, 102.5)]
    for t in timers + late:
        t.seconds
    assert late[1].seconds == pytest.approx(1.0)  # still its own seconds
    assert clock.busy_fraction() == pytest.approx(1.0 / 1.5)
    assert clock.passes == 3


def test_busy_fraction_needs_a_steady_state():
    clock = DeviceBusyClock()
    assert clock.busy_fraction() is None
    queue(clock, 0.0, 1.0).seconds
    assert clock.busy_fraction() is None  # one pass: nothing measured between passes yet


def test_cpu_engine_times_on_the_host_and_reports_no_gpu_busy_fraction():
    engine = Engine(load_model(ModelSpec(architecture="standin", weights="none")), EngineOptions(device="cpu"))
    _, timer = engine.predict(engine.upload(np.zeros((2, 3, 16, 16), np.float32), np.ones((2, 16, 16), bool)))
    assert timer.seconds > 0
    assert engine.describe()["gpu_busy_fraction"] is None
