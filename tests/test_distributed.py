"""Real dask.distributed processes on 127.0.0.1: same bytes on any cluster, lost workers, resume.

The stand-in model keeps these tests about scheduling; every process and wait is bounded in time.
Processes are lost at a known block (:mod:`tests.exit_after_blocks`), never by a kill raced
against the run's progress.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr

import tilepipe
from tests import exit_after_blocks
from tests.conftest import shared_file

DASK = str(Path(sys.executable).parent / "dask")
SMALL = dict(model="standin", weights="none", tile_size=128, overlap=32, chunk_size=256, block_size=256)
MANY = dict(model="standin", weights="none", tile_size=64, overlap=16, chunk_size=128, block_size=128)


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def dask_cluster(tmp_path, request):
    """A `dask scheduler` and two `dask worker` processes (each declaring one GPU resource, so the
    GPU-resource path is exercised: one block per worker at a time). Parametrized indirectly with
    N, the first worker exits right after storing its N-th block."""
    exit_after = getattr(request, "param", None)
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for(lambda: scheduler_file.exists() and scheduler_file.stat().st_size > 0, 30, "the scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        for n in range(2):
            hook, env = [], None
            if n == 0 and exit_after is not None:
                hook = ["--preload", exit_after_blocks.__file__]
                env = {**os.environ, exit_after_blocks.ENV: str(exit_after)}
            procs.append(subprocess.Popen(
                [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "0",
                 "--resources", "GPU=1", "--host", "127.0.0.1", *hook],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        from distributed import Client

        with Client(address, timeout="20s") as client:
            wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60, "two workers")
        yield address, procs[1:]
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait(timeout=10)


def mask_of(store) -> np.ndarray:
    return zarr.open_group(str(store), mode="r")["mask"][...]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """In-process results for the two settings used below."""
    tmp = tmp_path_factory.mktemp("reference")
    rgb, cogeo = shared_file("geotiff", "RGB.byte.tif"), shared_file("geotiff", "cogeo.tif")
    tilepipe.run(str(rgb), str(tmp / "rgb.zarr"), **SMALL)
    tilepipe.run(str(cogeo), str(tmp / "cogeo.zarr"), **MANY)
    return {"rgb": mask_of(tmp / "rgb.zarr"), "cogeo": mask_of(tmp / "cogeo.zarr")}


def test_external_cluster_gives_the_in_process_bytes(dask_cluster, reference, tmp_path):
    address, _ = dask_cluster
    out = tmp_path / "cluster.zarr"
    summary = tilepipe.run(str(shared_file("geotiff", "RGB.byte.tif")), str(out), scheduler=address, **SMALL)
    assert np.array_equal(mask_of(out), reference["rgb"])
    assert summary["environment"]["scheduler"] == f"dask.distributed at {address}"
    assert summary["environment"]["workers"] == 2  # two GPU units: two blocks at a time
    assert tilepipe.open(str(out)).is_complete
    from distributed import Client

    with Client(address, timeout="10s") as client:  # tilepipe never shuts down someone else's cluster
        assert len(client.scheduler_info()["workers"]) == 2


@pytest.mark.parametrize("dask_cluster", [2], indirect=True)
def test_a_worker_lost_mid_run_costs_nothing(dask_cluster, reference, tmp_path):
    """The first worker exits right after storing its second block (of 64); the scheduler hands
    its work to the other worker and the store comes out complete with the in-process bytes."""
    address, workers = dask_cluster
    out = tmp_path / "lost.zarr"
    summary = tilepipe.run(str(shared_file("geotiff", "cogeo.tif")), str(out), scheduler=address, **MANY)
    assert workers[0].wait(timeout=30) == exit_after_blocks.EXIT_CODE  # the hook ended it, mid-run
    assert workers[1].poll() is None
    assert summary.ok and summary["plan"]["blocks"] == 64
    assert np.array_equal(mask_of(out), reference["cogeo"])
    assert tilepipe.open(str(out)).is_complete


class SignalAfterBlocks:
    """A progress display that sends this process SIGTERM once it has heard of ``blocks`` blocks: a
    job scheduler's stop at a known point of the run (a distributed run hears of its blocks here,
    in the client's main thread, so the signal is handled before the next block is heard of)."""

    def __init__(self, blocks: int):
        self.blocks, self.heard = blocks, 0

    def begin(self, *args) -> None:
        pass

    def connected(self, dashboard) -> None:
        pass

    def __call__(self, report) -> None:
        self.heard += 1
        if self.heard == self.blocks:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_stop_signal_cancels_the_clusters_futures(dask_cluster, reference, tmp_path):
    """SIGTERM after the client heard of 4 blocks (of 64): the futures not done are cancelled, the
    run ends as interrupted (exit code 143 for the CLI) without its lease, and --resume on the same
    cluster completes the in-process bytes."""
    from tilepipe.pipeline import Interrupted

    address, _ = dask_cluster
    out = tmp_path / "stopped.zarr"
    source = str(shared_file("geotiff", "cogeo.tif"))
    with pytest.raises(Interrupted, match="SIGTERM: interrupted") as stopped:
        tilepipe.run(source, str(out), scheduler=address, progress=SignalAfterBlocks(4), **MANY)
    assert stopped.value.exit_code == 143
    assert stopped.value.summary["status"].startswith("interrupted: ")
    assert not out.with_suffix(".lease.json").exists()
    assert 4 <= int(tilepipe.open(str(out)).done_blocks().sum()) < 64
    summary = tilepipe.run(source, str(out), resume=True, scheduler=address, **MANY)
    assert summary.ok and tilepipe.open(str(out)).is_complete
    assert np.array_equal(mask_of(out), reference["cogeo"])


def test_resume_after_the_client_is_killed_runs_only_missing_blocks(reference, tmp_path, monkeypatch):
    out = tmp_path / "resumed.zarr"
    source = shared_file("geotiff", "cogeo.tif")
    args = ["run", str(source), "-o", str(out), "--workers", "1", "-q"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in MANY.items()]
    client = subprocess.run([sys.executable, exit_after_blocks.__file__, "3", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, timeout=300)
    assert client.returncode == exit_after_blocks.EXIT_CODE, client.stderr.decode()[-2000:]
    store = tilepipe.open(str(out))
    finished = int(store.done_blocks().sum())
    assert not store.is_complete and 3 <= finished < 64  # the client ended at its third stored block

    import tilepipe.schedule as schedule

    ran = []
    original = schedule.process_task

    def counting(ctx, units):
        ran.extend(index for unit in units for index in unit.block_indices)
        return original(ctx, units)

    monkeypatch.setattr(schedule, "process_task", counting)
    summary = tilepipe.run(str(source), str(out), resume=True, workers=2, **MANY)
    assert len(ran) == 64 - finished == summary["plan"]["blocks_run"]
    assert summary["plan"]["blocks_reused"] == finished
    assert np.array_equal(mask_of(out), reference["cogeo"])
    assert tilepipe.open(str(out)).is_complete


@pytest.mark.parametrize("change", [{"tile_size": 96}, {"input": "RGB.byte.tif"}, {"weights_file": True}])
def test_resume_refuses_a_store_from_another_run(tmp_path, change):
    cogeo = shared_file("geotiff", "cogeo.tif")
    out = tmp_path / "s.zarr"
    tilepipe.run(str(cogeo), str(out), **MANY)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    attrs = json.loads((out / "zarr.json").read_text())
    options = dict(MANY)
    source = cogeo
    if "tile_size" in change:
        options["tile_size"] = change["tile_size"]
    if "input" in change:
        source = shared_file("geotiff", change["input"])
    if "weights_file" in change:
        import torch

        from tilepipe.model import StandIn

        torch.save(StandIn(4).state_dict(), tmp_path / "other.pth")
        options["weights"] = str(tmp_path / "other.pth")
    with pytest.raises(tilepipe.TilepipeError, match="cannot resume.*left untouched"):
        tilepipe.run(str(source), str(out), resume=True, **options)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert json.loads((out / "zarr.json").read_text()) == attrs


def test_resume_without_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(tilepipe.TilepipeError, match="nothing to resume"):
        tilepipe.run(str(shared_file("geotiff", "RGB.byte.tif")), str(tmp_path / "none.zarr"), resume=True, **SMALL)


@pytest.mark.parametrize("url", ["memory://tilepipe-test/out.zarr", "file://{tmp}/out.zarr"])
def test_fsspec_urls_give_the_same_mask(reference, tmp_path, url):
    url = url.format(tmp=tmp_path)
    summary = tilepipe.run(str(shared_file("geotiff", "RGB.byte.tif")), url, **SMALL)
    assert summary.ok
    assert np.array_equal(zarr.open_group(url, mode="r")["mask"][...], reference["rgb"])
    assert tilepipe.open(url).is_complete


def test_local_cluster_is_started_and_torn_down(reference, tmp_path):
    import distributed

    environ = dict(os.environ)
    out = tmp_path / "local.zarr"
    summary = tilepipe.run(str(shared_file("geotiff", "RGB.byte.tif")), str(out), cluster="local:2", **SMALL)
    assert np.array_equal(mask_of(out), reference["rgb"])
    assert "LocalCluster of 2" in summary["environment"]["scheduler"]
    with pytest.raises(ValueError):
        distributed.get_client()  # no client (and so no cluster) left behind
    assert dict(os.environ) == environ  # LocalCluster's OMP_NUM_THREADS=1 & co. do not leak into the caller


def test_bad_cluster_options_are_clear_errors(tmp_path):
    src = str(shared_file("geotiff", "RGB.byte.tif"))
    with pytest.raises(tilepipe.TilepipeError, match="expected local:N"):
        tilepipe.run(src, str(tmp_path / "a.zarr"), cluster="remote:2", **SMALL)
    with pytest.raises(tilepipe.TilepipeError, match="either --cluster or --scheduler"):
        tilepipe.run(src, str(tmp_path / "b.zarr"), cluster="local:2", scheduler="tcp://127.0.0.1:1", **SMALL)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(tilepipe.TilepipeError, match="cannot connect"):
        tilepipe.run(src, str(tmp_path / "c.zarr"), scheduler="tcp://127.0.0.1:1", **SMALL)
