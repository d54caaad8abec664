"""A process that ends abruptly right after storing its N-th block: a worker or client lost mid-run
at a known point, instead of a kill raced against the run's progress.

Two ways in. As a dask worker preload (``dask worker --preload tests/exit_after_blocks.py`` with
``TILEPIPE_TEST_EXIT_AFTER_BLOCKS=N`` in the worker's environment) it ends that worker. As a
script (``python tests/exit_after_blocks.py N run ...``) it runs the tilepipe CLI and ends it.
Either way the process leaves with :data:`EXIT_CODE` once its N-th block is recorded in the store,
so a test knows how far the run got and that the hook, not something else, ended it.
"""

from __future__ import annotations

import itertools
import os
import sys

from tilepipe.sink import MaskStore

ENV = "TILEPIPE_TEST_EXIT_AFTER_BLOCKS"
EXIT_CODE = 75


def install(blocks: int) -> None:
    """Wrap :meth:`MaskStore.write_block` so that the process exits after ``blocks`` of them."""
    original = MaskStore.write_block
    stored = itertools.count(1)

    def write_then_exit_at_n(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if next(stored) >= blocks:
            os._exit(EXIT_CODE)  # no cleanup, no goodbye to the scheduler: as a crash or a kill -9

    MaskStore.write_block = write_then_exit_at_n


def dask_setup(worker) -> None:
    install(int(os.environ[ENV]))


if __name__ == "__main__":
    install(int(sys.argv[1]))
    from tilepipe.cli import main

    main(sys.argv[2:])
