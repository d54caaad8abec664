"""Repeated and concurrent runs: fresh handles for every run, one writer per store, resume checks.

All with the stand-in model (these tests are about stores, handles and leases, not the network).
Concurrency is made deterministic with a hook inside a block task (it waits on an Event), never
with sleeps.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import tilepipe
import tilepipe.schedule as schedule
from tilepipe import lease
from tilepipe.blocks import BlockReport
from tilepipe.report.figures import engine_as_run

from tests.conftest import smooth_image, write_geotiff

STANDIN = {"model": "standin", "weights": "none", "tile_size": 128, "overlap": 16, "workers": 1}
COARSE = {**STANDIN, "chunk_size": 128, "block_size": 256}
FINE = {**STANDIN, "chunk_size": 64, "block_size": 128}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_geotiff(tmp_path_factory.mktemp("runs") / "img.tif", smooth_image(300, 400))


def arrays(store) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {name: group[name][...] for name in ("mask", "probabilities") if name in group}


def chunk_files(store: Path, array: str) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / array).rglob("*")) if p.is_file()}


def test_probabilities_after_a_run_without_them(image, tmp_path):
    out = tmp_path / "m.zarr"
    tilepipe.run(image, out, **COARSE)
    tilepipe.run(image, out, overwrite=True, probabilities=True, **COARSE)
    fresh = tmp_path / "fresh.zarr"  # a path no earlier run of this process has touched
    tilepipe.run(image, fresh, probabilities=True, **COARSE)
    again, expected = arrays(out), arrays(fresh)
    assert again["probabilities"].any()
    assert np.array_equal(again["probabilities"], expected["probabilities"])
    assert np.array_equal(again["mask"], expected["mask"])
    assert tilepipe.open(out).is_complete


def test_changed_chunk_and_block_size_match_a_fresh_process_byte_for_byte(image, tmp_path):
    out = tmp_path / "m.zarr"
    tilepipe.run(image, out, **COARSE)
    tilepipe.run(image, out, overwrite=True, probabilities=True, **COARSE)
    summary = tilepipe.run(image, out, overwrite=True, probabilities=True, **FINE)
    assert summary.ok and summary["plan"]["blocks_failed"] == 0
    fresh = tmp_path / "fresh.zarr"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FINE.items()]
    subprocess.run([sys.executable, "-m", "tilepipe", "run", str(image), "-o", str(fresh), "--probabilities", "-q",
                    *flags], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    for array in ("mask", "probabilities"):
        ours, theirs = chunk_files(out, array), chunk_files(fresh, array)
        assert ours and ours == theirs, f"{array}: chunk files differ from a fresh process's"


@pytest.fixture
def held_block(monkeypatch):
    """Tasks wait before their first block until ``go`` is set; ``started`` fires when one is
    waiting. Returns (started, go)."""
    started, go = threading.Event(), threading.Event()
    original = schedule.process_task

    def waiting(ctx, units):
        started.set()
        assert go.wait(120), "the test never released the block"
        return original(ctx, units)

    monkeypatch.setattr(schedule, "process_task", waiting)
    yield started, go
    go.set()


def run_in_thread(*args, **kwargs) -> tuple[threading.Thread, dict]:
    result = {}

    def target():
        try:
            result["summary"] = tilepipe.run(*args, **kwargs)
        except Exception as exc:  # surfaced by the test's assertions
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


@pytest.fixture(scope="module")
def reference(image, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "ref.zarr"
    tilepipe.run(image, out, **COARSE)
    return arrays(out)["mask"]


def test_a_second_writer_is_refused_while_a_run_is_live(image, tmp_path, reference, held_block):
    out = tmp_path / "live.zarr"
    started, go = held_block
    first, result = run_in_thread(image, out, **COARSE)
    assert started.wait(60), result.get("error")
    holder = rf"another run is writing this store: run [0-9a-f]{{12}} \(pid {os.getpid()} on "
    for second in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(tilepipe.TilepipeError, match=holder):
            tilepipe.run(image, out, **second, **COARSE)
    go.set()
    first.join(120)
    assert "error" not in result, result.get("error")
    assert np.array_equal(arrays(out)["mask"], reference)
    assert tilepipe.open(out).is_complete
    assert not (tmp_path / "live.lease.json").exists()  # released when the run ended


def test_a_block_whose_store_was_replaced_stops_without_writing(image, tmp_path, held_block):
    out = tmp_path / "replaced.zarr"
    started, go = held_block
    first, result = run_in_thread(image, out, **COARSE)
    assert started.wait(60), result.get("error")
    group = zarr.open_group(str(out), mode="r+")  # another writer's store now (as after a takeover)
    group.attrs["tilepipe"] = {**group.attrs["tilepipe"], "run_id": "intruder"}
    go.set()
    first.join(120)
    assert isinstance(result.get("error"), tilepipe.TilepipeError)
    assert re.search(r"now belongs to run intruder, not to run [0-9a-f]{12}", str(result["error"]))
    after = zarr.open_group(str(out), mode="r")
    assert (after["mask"][...] == 255).all() and not after["blocks"][...].any()
    assert not tilepipe.open(out).is_complete


def test_a_resume_with_another_precision_is_refused_and_the_store_untouched(image, tmp_path):
    out = tmp_path / "p.zarr"
    tilepipe.run(image, out, precision="fp32", **COARSE)
    before = {p: p.stat().st_mtime_ns for p in [out, *out.rglob("*")]}
    attrs = (out / "zarr.json").read_bytes()
    with pytest.raises(tilepipe.TilepipeError, match=r"cannot resume.*engine\.precision \('fp32' then, 'bf16' now\)"
                                                     r".*left untouched"):
        tilepipe.run(image, out, resume=True, precision="bf16", **COARSE)
    assert {p: p.stat().st_mtime_ns for p in [out, *out.rglob("*")]} == before
    assert (out / "zarr.json").read_bytes() == attrs
    # what cannot change a pixel may change: workers, batch size
    summary = tilepipe.run(image, out, resume=True, precision="fp32", **{**COARSE, "workers": 2}, batch_size=1)
    assert summary["plan"]["blocks_reused"] == summary["plan"]["blocks"]


def interrupted_store(image, out: Path) -> np.ndarray:
    """A store as a crash leaves it: two blocks' chunks and records gone, not complete. Returns
    the complete mask."""
    tilepipe.run(image, out, **{**COARSE, "block_size": 128})
    group = zarr.open_group(str(out), mode="r+")
    complete = group["mask"][...]
    group["mask"][0:128, 0:256] = 255
    group["blocks"][0, 0:2] = 0
    group.attrs["tilepipe"] = {**group.attrs["tilepipe"], "complete": False}
    return complete


def write_lease(out: Path, host: str, pid: int, age: float) -> Path:
    path = out.with_name(out.name.removesuffix(".zarr") + ".lease.json")
    now = time.time()
    path.write_text(json.dumps({"run_id": "0123456789ab", "host": host, "pid": pid, "started": now - age - 5,
                                "renewed": now - age}))
    return path


def test_a_stale_lease_is_taken_over_by_resume(image, tmp_path):
    out = tmp_path / "crashed.zarr"
    complete = interrupted_store(image, out)
    path = write_lease(out, "render-node-7", 4242, age=1.0)  # alive, on another host
    with pytest.raises(tilepipe.TilepipeError, match=r"run 0123456789ab \(pid 4242 on render-node-7"):
        tilepipe.run(image, out, resume=True, **{**COARSE, "block_size": 128})
    write_lease(out, "render-node-7", 4242, age=lease.TIMEOUT_SECONDS + 1)  # not renewed: dead
    summary = tilepipe.run(image, out, resume=True, **{**COARSE, "block_size": 128})
    assert summary["plan"]["blocks_run"] == 2
    assert np.array_equal(arrays(out)["mask"], complete)
    assert tilepipe.open(out).info.run_id == summary["run_id"] != "0123456789ab"
    assert not path.exists()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(image, tmp_path):
    out = tmp_path / "killed.zarr"
    complete = interrupted_store(image, out)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lease(out, socket.gethostname(), gone.pid, age=0.0)
    tilepipe.run(image, out, resume=True, **{**COARSE, "block_size": 128})
    assert np.array_equal(arrays(out)["mask"], complete)


def test_memory_store_holds_a_lease_too(image):
    url = "memory://tilepipe-runs/m.zarr"
    tilepipe.run(image, url, **COARSE)
    import fsspec

    fs = fsspec.filesystem("memory")
    assert fs.exists("/tilepipe-runs/m.zarr") and not fs.exists("/tilepipe-runs/m.lease.json")
    fs.pipe("/tilepipe-runs/m.lease.json", json.dumps({"run_id": "feedfacecafe", "host": "elsewhere", "pid": 1,
                                                        "started": time.time(), "renewed": time.time()}).encode())
    with pytest.raises(tilepipe.TilepipeError, match="run feedfacecafe"):
        tilepipe.run(image, url, overwrite=True, **COARSE)
    fs.rm("/tilepipe-runs", recursive=True)


def _report(worker: str, device: str, precision: str, batch, tactics: dict) -> BlockReport:
    return BlockReport(index=(0, 0), core="", worker=worker, engine={
        "device": device, "device_name": device.upper(), "peak_tflops": None, "precision": precision,
        "batch_size": batch, "torch_threads": 4, "compile_warmup_seconds": 1.5, "tactics": tactics})


def test_the_summary_engine_is_what_the_workers_reported():
    same = engine_as_run([_report("a:1", "cuda:0", "bf16", {"512x512": 16}, {"channels_last": True}),
                          _report("b:2", "cuda:0", "bf16", {"512x512": 16}, {"mixed_precision": "bf16"})])
    assert same["device"] == "cuda:0" and same["precision"] == "bf16" and same["batch_size"] == {"512x512": 16}
    assert same["tactics"] == {"channels_last": True, "mixed_precision": "bf16"}
    assert same["engines_reporting"] == 2 and same["compile_warmup_seconds"] == 3.0
    mixed = engine_as_run([_report("a:1", "cuda:0", "bf16", 8, {}), _report("b:2", "cpu", "fp32", 4, {})])
    assert mixed["device"] == "cpu + cuda:0" and mixed["precision"] == "bf16 + fp32" and mixed["batch_size"] == "4 + 8"


def test_a_distributed_client_never_loads_the_model(image, tmp_path):
    from tilepipe.model import cached_model

    cached_model.cache_clear()
    summary = tilepipe.run(image, tmp_path / "d.zarr", cluster="local:2", **COARSE)
    assert cached_model.cache_info().currsize == 0  # the workers loaded it, this process did not
    assert summary["engine"]["device"] == "cpu" and summary["engine"]["precision"] == "fp32"
    assert 1 <= summary["engine"]["engines_reporting"] <= 2
    assert summary["model"]["parameters"] > 0 and summary["model"]["macs_per_tile"] > 0


def test_the_model_card_needs_no_device_and_matches_the_loaded_model(tmp_path):
    import torch

    from tilepipe.model import ModelSpec, StandIn, load_model, model_card

    good, wrong = tmp_path / "four.pth", tmp_path / "narrow.pth"
    torch.save(StandIn(4).state_dict(), good)
    torch.save(StandIn(4, width=6).state_dict(), wrong)  # the class count comes from the file; the width cannot
    spec = ModelSpec(architecture="standin", weights=str(good))
    card = model_card(spec)
    assert card == load_model(spec).card
    assert card.parameters == (3 * 8 * 9 + 8) + (8 * 4 * 9 + 4)  # 516: two 3x3 convolutions' weights and biases
    with pytest.raises(tilepipe.TilepipeError, match="narrow.pth: keys do not match standin"):
        model_card(ModelSpec(architecture="standin", weights=str(wrong)))


def test_a_lease_taken_over_is_neither_renewed_nor_removed_by_its_old_holder(tmp_path):
    out = tmp_path / "l.zarr"
    mine = lease.Lease.acquire(str(out), "aaaaaaaaaaaa")
    try:
        path = Path(mine.path)
        mine.renew()
        assert json.loads(path.read_text())["run_id"] == "aaaaaaaaaaaa"
        usurper = {"run_id": "bbbbbbbbbbbb", "host": "elsewhere", "pid": 7, "started": 1.0, "renewed": time.time()}
        path.write_text(json.dumps(usurper))  # as a --resume does once this lease looks dead
        mine.renew()
        assert mine.lost is not None and mine.lost.run_id == "bbbbbbbbbbbb"
    finally:
        mine.release()
    assert json.loads(path.read_text()) == usurper


@pytest.mark.parametrize("setting", [False, True])
def test_a_run_leaves_cudnn_autotuning_as_it_found_it(image, tmp_path, setting, monkeypatch):
    """``torch.backends.cudnn.benchmark`` is process-wide: a run switches it on around its forward
    passes only (on every device, so a CPU checks the code CUDA runs) and leaves the caller's value."""
    import torch
    from torch.nn.modules.module import register_module_forward_pre_hook

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", setting)
    during = []  # the engine's passes; the summary's cost counting runs the network on the meta device

    def spy(module, args):
        if args[0].device.type != "meta":
            during.append(torch.backends.cudnn.benchmark)

    hook = register_module_forward_pre_hook(spy)
    try:
        tilepipe.run(image, tmp_path / f"{setting}.zarr", **STANDIN)
    finally:
        hook.remove()
    assert during and all(during)
    assert torch.backends.cudnn.benchmark is setting
