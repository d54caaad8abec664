"""A dask worker preload that ends its worker process, as a crash would, when a task is about
to store one given block (``TILEPIPE_TEST_EXIT_AT_BLOCK=ROW,COL`` in the worker's environment):
the task dies at a known point every time it runs, wherever it runs, so Dask ends up giving it
up (``KilledWorker``) after ``distributed.scheduler.allowed-failures`` retries."""

from __future__ import annotations

import os

from tilepipe.sink import MaskStore

ENV = "TILEPIPE_TEST_EXIT_AT_BLOCK"
EXIT_CODE = 76


def dask_setup(worker) -> None:
    target = tuple(int(v) for v in os.environ[ENV].split(","))
    original = MaskStore.write_block

    def exit_at_target(self, block, *args, **kwargs):
        if tuple(block.index) == target:
            os._exit(EXIT_CODE)  # no cleanup, no goodbye to the scheduler
        return original(self, block, *args, **kwargs)

    MaskStore.write_block = exit_at_target
