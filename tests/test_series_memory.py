"""Blending buffers along a series: a task groups many slices (units), and the buffers it holds at
once must be bounded by the units it is blending, not by the slices it was given (issue 18, 8).

The count is deterministic, not a memory reading: every score accumulator ``tilepipe.stitch``
creates is tracked from its allocation until CPython frees it (a ``weakref.finalize``), and the
most alive at once is compared with the number of tasks running at once. I/O and scheduling
only, so the stand-in model."""

from __future__ import annotations

import threading
import weakref

import pytest
import torch
import zarr

import tilepipe
from tilepipe import blocks, stitch, stream
from tilepipe.pipeline import RunFailed
from tilepipe.sizing import return_large_frees
from tilepipe.testing import write_ct_series

CLASSES = 5
WORKERS = 2


class CountingTorch:
    """``torch`` as :mod:`tilepipe.stitch` sees it, counting the tensors it creates that have the
    shape of a score accumulator (``CLASSES`` planes of rows x columns), alive at once and in all."""

    FACTORIES = ("zeros", "full", "empty", "ones", "zeros_like", "empty_like", "full_like")

    def __init__(self):
        self.alive = self.peak = self.created = 0
        self.lock = threading.Lock()

    def __getattr__(self, name):
        made = getattr(torch, name)
        if name not in self.FACTORIES:
            return made

        def tracked(*args, **kwargs):
            tensor = made(*args, **kwargs)
            if tensor.dim() == 3 and tensor.shape[0] == CLASSES:
                with self.lock:
                    self.alive += 1
                    self.created += 1
                    self.peak = max(self.peak, self.alive)
                weakref.finalize(tensor, self._freed)
            return tensor

        return tracked

    def _freed(self) -> None:
        with self.lock:
            self.alive -= 1


@pytest.mark.parametrize("slices,size,units_per_task", [(40, 32, 10), (16, 96, 4)])
def test_a_task_holds_the_buffers_of_the_units_it_blends_not_of_all_its_slices(tmp_path, monkeypatch, slices,
                                                                                size, units_per_task):
    """32 px slices are one tile each (10 slices per task); 96 px slices are 4 tile rows of 4 tiles
    (4 slices per task, 3 blocks each). Two tasks run at once, each blending its units in turn, so
    at most two accumulators are alive at any moment, whatever the task's slice count."""
    write_ct_series(tmp_path / "ct", slices=slices, size=size)
    plan = tilepipe.plan(str(tmp_path / "ct"), model="standin", weights="none", num_classes=CLASSES, tile_size=32,
                         overlap=8, chunk_size=32, workers=WORKERS)
    assert plan["tasks"] * units_per_task == slices  # the grouping this test is about: many units per task
    counting = CountingTorch()
    monkeypatch.setattr(stitch, "torch", counting)
    summary = tilepipe.run(str(tmp_path / "ct"), str(tmp_path / "m.zarr"), model="standin", weights="none",
                           num_classes=CLASSES, tile_size=32, overlap=8, chunk_size=32, workers=WORKERS, batch_size=4)
    assert summary.ok
    mask = zarr.open_group(str(tmp_path / "m.zarr"))["mask"][...]
    assert mask.shape == (slices, size, size) and (mask < CLASSES).all()
    assert counting.created >= plan["tasks"]  # the accumulators were tracked (a task's units may share them)
    assert counting.alive == 0  # nothing held after the run
    assert counting.peak <= WORKERS, f"{counting.peak} accumulators alive at once for {WORKERS} tasks"


class FailingPlanes:
    """A source whose tile rows below the first fail to read on plane 0 (a truncated file)."""

    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        return getattr(self.source, name)

    def read(self, window, plane=None):
        if plane == 0 and window.row_stop > 48:
            raise OSError("truncated")
        return self.source.read(window, plane)


def test_a_failed_unit_drops_its_buffers(tmp_path, monkeypatch):
    """A unit whose read fails below its first tile row fails at once, and holds no accumulator
    for the rest of its task (one task at a time here, and the next unit's tiles come later)."""
    write_ct_series(tmp_path / "ct", slices=4, size=96)
    counting = CountingTorch()
    monkeypatch.setattr(stitch, "torch", counting)
    opened = blocks.open_source
    monkeypatch.setattr(blocks, "open_source", lambda spec, run_id: FailingPlanes(opened(spec, run_id)))
    alive_after_failure = []
    fail = stream._UnitRun.fail

    def recording_fail(self, exc, trace):
        fail(self, exc, trace)
        alive_after_failure.append(counting.alive)

    monkeypatch.setattr(stream._UnitRun, "fail", recording_fail)
    with pytest.raises(RunFailed, match="3 of 12 blocks failed .*truncated"):  # plane 0's three blocks
        tilepipe.run(str(tmp_path / "ct"), str(tmp_path / "m.zarr"), model="standin", weights="none",
                     num_classes=CLASSES, tile_size=32, overlap=8, chunk_size=32, workers=1, batch_size=4)
    assert alive_after_failure == [0]
    assert counting.alive == 0
    mask = zarr.open_group(str(tmp_path / "m.zarr"))["mask"]
    assert (mask[1:] < CLASSES).all()  # the other slices are whole


def test_a_malloc_threshold_set_by_the_user_is_left_alone(monkeypatch):
    """glibc reads MALLOC_MMAP_THRESHOLD_ at start; tilepipe.run must not override it."""
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert return_large_frees() is False
