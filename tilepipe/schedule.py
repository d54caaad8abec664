"""Turning the plan into Dask tasks (one per block) and running them.

In-process by default: Dask's threaded scheduler runs ``workers`` block tasks at once in this
process, so reading and writing of some blocks overlaps the forward pass of another while the one
model (loaded once) serialises its batches. Tasks carry a :class:`RunContext` and a block index,
never open files or models, so the same graph can run on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterable

import dask
from dask.callbacks import Callback

from .blocks import BlockReport, RunContext, process_block


class _Progress(Callback):
    def __init__(self, on_report: Callable[[BlockReport], None]):
        super().__init__()
        self.on_report = on_report

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(result, BlockReport):
            self.on_report(result)


def run_blocks(ctx: RunContext, indices: Iterable[tuple[int, ...]], workers: int,
               on_report: Callable[[BlockReport], None] | None = None) -> list[BlockReport]:
    """Run the block tasks on ``workers`` threads; returns one report per block."""
    tasks = [
        dask.delayed(process_block, pure=False)(ctx, index, dask_key_name=f"block-{'-'.join(map(str, index))}")
        for index in indices
    ]
    progress = _Progress(on_report) if on_report else nullcontext()
    with progress, dask.config.set(scheduler="threads", num_workers=max(1, workers)):
        return list(dask.compute(*tasks))
