"""A dask worker preload that records, one JSON line per event in the file named by
``TILEPIPE_TEST_WORKER_SPY``, what a worker process does with the input's scaling: each
statistics sample it takes (``sampled``) and the resolved scaling each task's spec carries
(``received``), and at its start the GPU it was pinned to and the resources it declares
(``started``). Installed through dask's ``distributed.worker.preload`` setting, which the
nannies of a LocalCluster pass on to the worker processes they start."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

ENV = "TILEPIPE_TEST_WORKER_SPY"


def _record(event: str, **fields) -> None:
    with open(os.environ[ENV], "a") as f:
        f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


def install() -> None:
    import tilepipe.blocks as blocks
    from tilepipe.sources.geotiff import GeoTiffSource

    sample, open_source = GeoTiffSource._sample, blocks.open_source

    def recorded_sample(self):
        _record("sampled")
        return sample(self)

    def recorded_open(spec, run_id=None):
        resolved = spec.scaling.resolved
        _record("received", scaling=None if resolved is None else asdict(resolved))
        return open_source(spec, run_id)

    GeoTiffSource._sample = recorded_sample
    blocks.open_source = recorded_open


def read(path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def dask_setup(worker) -> None:
    _record("started", visible=os.environ.get("CUDA_VISIBLE_DEVICES"), resources=dict(worker.state.total_resources))
    install()
