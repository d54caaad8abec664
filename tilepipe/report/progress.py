"""Progress of a run on the client: blocks done of total (and a batch's inputs), megapixels per second, ETA.

On a terminal it is one line refreshed in place; otherwise (a log file, CI, a pipe) it stays
silent unless ``every`` seconds is given, then it logs a line at that interval.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("tilepipe")


class Progress:
    def __init__(self, stream=None, every: float | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.total = 0
        self.megapixels_per_block: dict[tuple, float] = {}
        self.done = 0
        self.failed = 0
        self.megapixels = 0.0
        self.start = time.perf_counter()
        self._last = 0.0

    def begin(self, total_blocks: int, block_megapixels: dict[tuple, float], reused: int) -> None:
        self.total, self.megapixels_per_block = total_blocks, block_megapixels
        self.start = time.perf_counter()
        if reused:
            log.info("resuming: %d finished blocks reused, %d to run", reused, total_blocks)

    def connected(self, dashboard: str | None) -> None:
        if dashboard:
            log.warning("Dask dashboard: %s", dashboard)

    def __call__(self, report) -> None:
        self.done += 1
        self.failed += bool(report.error)
        self.megapixels += self.megapixels_per_block.get(tuple(report.index), 0.0)
        now = time.perf_counter()
        if self.tty or (self.every is not None and now - self._last >= self.every) or self.done == self.total:
            self._last = now
            self._show(self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        rate = self.megapixels / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left * elapsed / self.done:.0f} s" if self.done and left else "0 s"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"blocks {self.done}/{self.total}{failed}, {rate:.2f} MP/s, ETA {eta}"

    def _show(self, line: str) -> None:
        if self.tty:
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()
        elif self.every is not None:
            log.info(line)

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()


class BatchProgress(Progress):
    """A batch's progress: inputs finished of the total, then the blocks of every input begun so
    far, on one line. Each input reports through its own :meth:`input` view (block indices repeat
    from input to input); the views may be called from several threads at once."""

    def __init__(self, inputs: int, stream=None, every: float | None = None):
        super().__init__(stream, every)
        self.inputs, self.inputs_done = inputs, 0
        self._lock = threading.Lock()
        self._dashboard_shown = False

    def input(self) -> _InputProgress:
        return _InputProgress(self)

    def input_done(self) -> None:
        with self._lock:
            self.inputs_done += 1
            self._show(self.line(time.perf_counter() - self.start))

    def _blocks_begun(self, blocks: int, reused: int) -> None:
        with self._lock:
            self.total += blocks
        if reused:
            log.info("resuming: %d finished blocks reused, %d to run", reused, blocks)

    def _block_done(self, report, megapixels: float) -> None:
        with self._lock:
            self.done += 1
            self.failed += bool(report.error)
            self.megapixels += megapixels
            now = time.perf_counter()
            if self.tty or (self.every is not None and now - self._last >= self.every):
                self._last = now
                self._show(self.line(now - self.start))

    def connected(self, dashboard: str | None) -> None:
        with self._lock:
            shown, self._dashboard_shown = self._dashboard_shown, True
        if not shown:
            super().connected(dashboard)

    def line(self, elapsed: float) -> str:
        return f"inputs {self.inputs_done}/{self.inputs}, " + super().line(elapsed)


class _InputProgress:
    """What one input's run sees as its progress: it adds to the batch's."""

    def __init__(self, batch: BatchProgress):
        self.batch = batch
        self.megapixels_per_block: dict[tuple, float] = {}

    def begin(self, total_blocks: int, block_megapixels: dict[tuple, float], reused: int) -> None:
        self.megapixels_per_block = block_megapixels
        self.batch._blocks_begun(total_blocks, reused)

    def connected(self, dashboard: str | None) -> None:
        self.batch.connected(dashboard)

    def __call__(self, report) -> None:
        self.batch._block_done(report, self.megapixels_per_block.get(tuple(report.index), 0.0))
