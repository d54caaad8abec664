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
