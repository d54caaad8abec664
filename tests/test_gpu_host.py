"""Distributed runs as a GPU host runs them: scaling resolved once on the client, failed tasks
reported without losing the others, workers pinned one per GPU.

Real dask.distributed processes on 127.0.0.1 with the stand-in model (these tests are about
scheduling, not the network); a worker's behaviour is observed or ended through a preload hook
at a known point, never by racing a kill against the run's progress.
"""

from __future__ import annotations

import os

import dask
# imported for its config defaults: a dask.config.set("distributed.*") made before they load
# would, on exit, remove the whole "distributed" section it found missing
import distributed  # noqa: F401
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
    fingerprint = tilepipe.open(str(tmp_path / "m.zarr")).info.fingerprint
    shipped = summary["input"]["scaling"]
    assert shipped["method"] == "percentile 2-98"
    assert all(e["scaling"] == shipped == fingerprint.input["scaling"] for e in received)


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


@pytest.mark.parametrize("workers,gpus,expected", [
    (None, ["0", "1", "2"], ["0", "1", "2"]),  # local: one per GPU
    (2, ["0", "1", "2", "3"], ["0", "1"]),
    (5, ["0", "1"], ["0", "1", "0", "1", "0"]),  # more workers than GPUs: round robin
    (2, ["GPU-5d3c", "MIG-7a1f"], ["GPU-5d3c", "MIG-7a1f"]),  # the names the parent's CUDA_VISIBLE_DEVICES used
])
def test_each_worker_is_pinned_to_one_gpu(workers, gpus, expected):
    from tilepipe.local_cluster import worker_pins

    pins = worker_pins(workers, gpus)
    assert [p["env"]["CUDA_VISIBLE_DEVICES"] for p in pins] == expected
    assert all(p["resources"] == {"GPU": 1} for p in pins)


def test_workers_are_not_pinned_without_gpus_or_for_one_gpu_asked_by_name(monkeypatch):
    import tilepipe.local_cluster as local_cluster

    assert local_cluster.worker_pins(3, []) == [{}, {}, {}]
    with pytest.raises(tilepipe.TilepipeError, match="one worker per GPU.*local:N"):
        local_cluster.worker_pins(None, [])
    monkeypatch.setattr(local_cluster, "cuda_devices", lambda: ["0", "1"])
    assert local_cluster.gpus_to_pin("auto") == local_cluster.gpus_to_pin("cuda") == ["0", "1"]
    assert local_cluster.gpus_to_pin("cpu") == local_cluster.gpus_to_pin("cuda:1") == []


def test_visible_devices_are_named_as_the_parent_sees_them(monkeypatch):
    """A parent started with CUDA_VISIBLE_DEVICES=3,5 hands its workers "3" and "5" (not 0 and 1),
    and a worker pinned to "5" reports its cuda:0 as GPU 5 (faked device count: no GPU here)."""
    import torch

    from tilepipe.device import cuda_devices, gpu_label

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert cuda_devices() == ["3", "5"]
    assert gpu_label(torch.device("cuda", 1)) == "GPU 5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert cuda_devices() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpu_label(torch.device("cuda", 0)) == "GPU 5"


def test_local_starts_one_pinned_worker_per_gpu(tmp_path, monkeypatch):
    """``--cluster local`` on a host that reports two GPUs (faked in this process: the workers
    find no CUDA and compute on the CPU): two worker processes, one seeing GPU 0 and one GPU 1,
    each declaring GPU=1, so the run has two slots; recorded by a preload in each worker. The
    mask is the in-process run's."""
    import zarr

    import tilepipe.local_cluster as local_cluster

    path = write_geotiff(tmp_path / "img.tif", smooth_image(192, 256))
    tilepipe.run(str(path), str(tmp_path / "ref.zarr"), **STANDIN)
    monkeypatch.setattr(local_cluster, "cuda_devices", lambda: ["0", "1"])
    spy = tmp_path / "spy.jsonl"
    monkeypatch.setenv(worker_spy.ENV, str(spy))
    with dask.config.set({"distributed.worker.preload": [worker_spy.__file__]}):
        summary = tilepipe.run(str(path), str(tmp_path / "m.zarr"), cluster="local", **STANDIN)
    started = [e for e in worker_spy.read(spy) if e["event"] == "started"]
    assert sorted(e["visible"] for e in started) == ["0", "1"]
    assert all(e["resources"] == {"GPU": 1} for e in started)
    assert summary["environment"]["workers"] == 2
    assert summary["environment"]["scheduler"] == ("dask.distributed LocalCluster of 2 worker processes, "
                                                   "each pinned to one GPU of 0, 1")
    masks = [zarr.open_group(str(tmp_path / name), mode="r")["mask"][...] for name in ("ref.zarr", "m.zarr")]
    assert np.array_equal(*masks)


def test_the_summary_names_each_gpu_and_its_busy_fraction():
    """Engines as two pinned workers on one host report them (values written by hand)."""
    from tilepipe.blocks import BlockReport
    from tilepipe.report.figures import engine_as_run

    def engine(gpu, busy):
        return {"device": "cuda:0", "device_name": "NVIDIA H200", "gpu": gpu, "peak_tflops": 989.4,
                "precision": "bf16", "batch_size": 16, "torch_threads": 1, "compile_warmup_seconds": 0.0,
                "gpu_busy_fraction": busy, "tactics": {}}

    reports = [BlockReport(index=(0, 0), core="", worker="node:11", engine=engine("GPU 0", 0.91)),
               BlockReport(index=(0, 1), core="", worker="node:12", engine=engine("GPU 1", 0.87))]
    described = engine_as_run(reports)
    assert described["gpus"] == [
        {"worker": "node:11", "gpu": "GPU 0", "device_name": "NVIDIA H200", "busy_fraction": 0.91},
        {"worker": "node:12", "gpu": "GPU 1", "device_name": "NVIDIA H200", "busy_fraction": 0.87}]
    assert described["gpu_busy_fraction"] == 0.89


def test_the_readme_slurm_recipe_asks_one_gpu_per_job_and_one_task_per_gpu():
    """The job script dask-jobqueue writes for the SLURM recipe of ``docs/guide/clusters.md`` (no SLURM needed: the
    script is only generated): one GPU per job, the job's CPUs for the task's reader threads, and
    a worker of one thread declaring one GPU, so each GPU runs one task at a time."""
    jobqueue = pytest.importorskip("dask_jobqueue")
    with jobqueue.SLURMCluster(cores=1, processes=1, job_cpu=8, memory="64GB", walltime="04:00:00", queue="gpu",
                               job_extra_directives=["--gres=gpu:1"], worker_extra_args=["--resources", "GPU=1"],
                               scheduler_options={"dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:1" in directives
    assert "#SBATCH --cpus-per-task=8" in directives
    assert "#SBATCH -p gpu" in directives
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1" in worker and "--resources GPU=1" in worker
