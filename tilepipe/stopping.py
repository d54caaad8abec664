"""Stopping a run on SIGTERM or SIGINT without losing what it did.

SLURM, Kubernetes and systemd send SIGTERM some seconds before they kill; Ctrl-C sends SIGINT.
The first of either asks the run to stop (:class:`Stop`): no new task starts, a task in this
process stops after the block it is writing (:class:`Stopped` is raised from the report of each
block stored after the request), a cluster's futures are cancelled. Blocks are written whole and
recorded only after their chunks, so whatever is abandoned is simply not recorded and ``--resume``
redoes it. The run then releases its lease, writes its summary as interrupted and exits 130
(SIGINT) or 143 (SIGTERM), the shell's codes for a process ended by those signals.

A second signal ends the process at once (the blocks in flight are lost, not half-recorded): the
way out when finishing the blocks in flight takes too long.

Handlers are installed only from the main thread (Python allows no other), so a run started from
another thread keeps the process's own handling.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable

log = logging.getLogger("tilepipe")

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""128 + the signal's number, as a shell reports a process that the signal ended."""


class Stopped(Exception):
    """Raised inside a task, after a block is stored, once the run was asked to stop."""


class Stop:
    """Whether, and by which signal, a run was asked to stop, and what to do at that moment."""

    def __init__(self):
        self.signal: int | None = None
        self._hooks: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signal]

    def request(self, signum: int) -> None:
        self.signal = signum
        for hook in self._hooks:
            hook()

    def on_request(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` when a stop is requested (at once if it already was): e.g. cancel futures.
        Returns what forgets the hook again, for a caller done with what it holds (a batch's
        inputs share one stop, and each input's futures must not outlive it)."""
        self._hooks.append(hook)
        if self.requested:
            hook()
        return lambda: self._hooks.remove(hook)

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was requested."""
        if self.requested:
            raise Stopped(self.name)


@contextmanager
def stop_on_signals(stop: Stop, at_once: Callable[[], None]):
    """While inside, the first SIGTERM or SIGINT requests ``stop``; a second calls ``at_once`` (say,
    release the lease) and ends the process with the signal's exit code. The process's previous
    handlers come back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        name = signal.Signals(signum).name
        if stop.requested:
            log.error("%s again: stopped at once; the blocks in flight are lost, run again with --resume", name)
            at_once()
            logging.shutdown()
            os._exit(EXIT_CODES[signum])
        log.warning("%s: stopping after the blocks being written (press Ctrl-C again to stop at once)", name)
        stop.request(signum)

    previous = {signum: signal.signal(signum, handle) for signum in EXIT_CODES}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
