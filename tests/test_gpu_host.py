"""Distributed runs as a GPU host runs them: scaling resolved once on the client, failed tasks
reported without losing the others, workers pinned one per GPU.

Real dask.distributed processes on 127.0.0.1 with the stand-in model (these tests are about
scheduling, not the network); a worker's behaviour is observed or ended through a preload hook
at a known point, never by racing a kill against the run's progress.
"""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest

import tilepipe
from tests import worker_spy
from tests.conftest import smooth_image, write_geotiff
from tilepipe.sources.geotiff import GeoTiffSource

STANDIN = dict(model="standin", weights="none", tile_size=64, overlap=16, chunk_size=64, block_size=64)


def test_scaling_is_resolved_once_and_shipped_to_the_workers(tmp_path, monkeypatch):
    """A uint16 scene scales by percentiles of a sample. The client samples once; the two worker
    processes receive its numbers in the task spec and sample nothing (recorded by a preload in
    each worker). The numbers they receive are the ones the summary and fingerprint record."""
    path = write_geotiff(tmp_path / "u16.tif", smooth_image(192, 256, dtype=np.uint16))
    spy = tmp_path / "spy.jsonl"
    monkeypatch.setenv(worker_spy.ENV, str(spy))
    client_samples = []
    sample = GeoTiffSource._sample

    def counted(self):
        client_samples.append(os.getpid())
        return sample(self)

    monkeypatch.setattr(GeoTiffSource, "_sample", counted)
    with dask.config.set({"distributed.worker.preload": [worker_spy.__file__]}):
        summary = tilepipe.run(str(path), str(tmp_path / "m.zarr"), cluster="local:2", **STANDIN)
    events = worker_spy.read(spy)
    received = [e for e in events if e["event"] == "received"]
    assert client_samples == [os.getpid()]
    assert received and all(e["pid"] != os.getpid() for e in received)
    assert not [e for e in events if e["event"] == "sampled"]
    fingerprint = tilepipe.open(str(tmp_path / "m.zarr")).info["fingerprint"]
    shipped = summary["input"]["scaling"]
    assert shipped["method"] == "percentile 2-98"
    assert all(e["scaling"] == shipped == fingerprint["input"]["scaling"] for e in received)


def test_a_task_dask_gives_up_on_fails_alone(tmp_path, monkeypatch):
    """The task holding block (1, 1) kills its worker process each time it is about to store that
    block; with ``allowed-failures`` 0 Dask gives it up at once (``KilledWorker``), and the
    workers take one task at a time (``worker-saturation`` 1.0) so no other task is on the dying
    worker. The run collects every other task's reports: the failed blocks are exactly the
    unrecorded blocks of that one task, (1, 1) among them, each with a one-line error; every other
    block is recorded with the in-process run's bytes, and the CLI exits 1."""
    import zarr

    from tests import exit_at_block
    from tilepipe.cli import main

    path = write_geotiff(tmp_path / "img.tif", smooth_image(256, 256))
    tilepipe.run(str(path), str(tmp_path / "ref.zarr"), **STANDIN)
    reference = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")["mask"][...]
    monkeypatch.setenv(exit_at_block.ENV, "1,1")
    out = tmp_path / "lost.zarr"
    config = {"distributed.worker.preload": [exit_at_block.__file__], "distributed.scheduler.allowed-failures": 0,
              "distributed.scheduler.worker-saturation": 1.0}
    args = ["run", str(path), "-o", str(out), "--cluster", "local:2", "-q"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in STANDIN.items()]
    with dask.config.set(config), pytest.raises(SystemExit) as ended:
        main(args)
    assert ended.value.code == 1
    summary = tilepipe.open(str(out)).summary
    failed = {tuple(b["index"]): b["error"] for b in summary["failed_blocks"]}
    assert (1, 1) in failed
    assert all("worker process died" in e and "KilledWorker" in e and "\n" not in e for e in failed.values())
    group = zarr.open_group(str(out), mode="r")
    done = group["blocks"][...].astype(bool)
    assert done.size == 16 and done.sum() + len(failed) == 16 and not any(done[i] for i in failed)
    mask = group["mask"][...]
    for r, c in zip(*np.nonzero(done)):
        window = (slice(64 * r, 64 * r + 64), slice(64 * c, 64 * c + 64))
        assert np.array_equal(mask[window], reference[window])
