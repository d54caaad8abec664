"""The engine on the CPU: batching, auto batch size, the compile path's padding and warm-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tilepipe.device import device_peak_tflops
from tilepipe.engine import Engine, EngineOptions
from tilepipe.errors import TilepipeError
from tilepipe.model import ModelSpec, load_model


def standin_engine(**options) -> Engine:
    return Engine(load_model(ModelSpec(architecture="standin", weights="none")), EngineOptions(device="cpu", **options))


def batch(n: int, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, size, size), dtype=np.float32)
    valid = np.ones((n, size, size), bool)
    return images, valid


def test_probabilities_sum_to_one_and_do_not_depend_on_the_batch():
    engine = standin_engine(batch_size=3)
    images, valid = batch(3)
    together, _ = engine.predict(engine.upload(images, valid))
    alone, _ = engine.predict(engine.upload(images[1:2], valid[1:2]))
    assert together.shape == (3, 4, 32, 32)
    torch.testing.assert_close(together.sum(dim=1), torch.ones(3, 32, 32))
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-6)


def test_invalid_pixels_enter_the_network_as_zero():
    """A tile whose invalid half holds garbage predicts like one whose invalid half is the mean."""
    engine = standin_engine()
    images, valid = batch(1)
    valid[:, :, 16:] = False
    garbage = images.copy()
    garbage[:, :, :, 16:] = 1.0
    mean = images.copy()
    mean[:, :, :, 16:] = np.asarray(engine.model.mean, np.float32)[:, None, None]
    a, _ = engine.predict(engine.upload(garbage, valid))
    b, _ = engine.predict(engine.upload(mean, valid))
    torch.testing.assert_close(a, b)


def test_auto_batch_size_on_cpu_is_fixed_and_reported():
    engine = standin_engine(batch_size="auto")
    assert engine.batch_size_for(64, 64) == Engine.AUTO_CPU_BATCH
    assert engine.describe()["batch_size"] == {"64x64": Engine.AUTO_CPU_BATCH}


def test_compiled_path_pads_batches_and_times_warmup_apart(monkeypatch):
    """torch.compile itself is slow on a CPU (a minute for the stand-in); the identity stands in
    for it so the padding and warm-up bookkeeping around it are what is tested."""
    monkeypatch.setattr(torch, "compile", lambda module: module)
    plain, compiled = standin_engine(batch_size=4), standin_engine(batch_size=4, compile=True)
    images, valid = batch(3)
    uploaded = compiled.upload(images, valid)
    assert uploaded.images.shape[0] == 4 and uploaded.count == 3  # padded to the compiled shape
    first, timer = compiled.predict(uploaded)
    assert timer.seconds == 0.0 and compiled.warmup_seconds > 0  # the first pass per shape is warm-up
    again, timer = compiled.predict(compiled.upload(images, valid))
    assert timer.seconds > 0
    expected, _ = plain.predict(plain.upload(images, valid))
    assert first.shape == expected.shape == (3, 4, 32, 32)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-6)
    assert compiled.describe()["tactics"]["compile"] is True


@pytest.mark.parametrize("options,message", [
    (dict(batch_size=0), "batch-size"),
    (dict(batch_size="big"), "batch-size"),
    (dict(precision="fp16"), "fp16 needs a CUDA device"),
    (dict(precision="fp8"), "choose auto"),
])
def test_bad_engine_options(options, message):
    with pytest.raises(TilepipeError, match=message):
        standin_engine(**options)


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TilepipeError, match="CUDA is not available"):
        Engine(load_model(ModelSpec(architecture="standin", weights="none")), EngineOptions(device="cuda"))


def test_cpu_runs_claim_no_gpu_tactics_and_peaks_are_known_for_gpus():
    tactics = standin_engine().describe()["tactics"]
    assert not {"mixed_precision", "cudnn_benchmark", "pinned_memory", "non_blocking_copies"} & set(tactics)
    assert device_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert device_peak_tflops("NVIDIA H100 PCIe", "fp32") == 51.2
    assert device_peak_tflops("AMD EPYC", "fp32") is None


@pytest.mark.parametrize("bands,dtype,low,high", [(3, np.uint8, 0.0, 255.0), (1, np.int16, -160.0, 240.0)])
def test_scaling_on_the_device_matches_the_host(bands, dtype, low, high):
    """On CUDA, raw tiles travel in the file's dtype and are scaled by the engine (checked here
    through the same code on the CPU); the result must be the network's output on tiles scaled
    here by the window's definition: (value - low) / (high - low), clipped to [0, 1], one band
    copied to three channels."""
    from tilepipe.sources.scaling import IntensityScaling

    scaling = IntensityScaling("fixed", (low,) * bands, (high,) * bands, "test")
    rng = np.random.default_rng(1)
    raw = rng.integers(np.iinfo(dtype).min // 2, np.iinfo(dtype).max // 2, (2, bands, 32, 32)).astype(dtype)
    valid = np.ones((2, 32, 32), bool)
    engine = standin_engine(batch_size=2)
    host = np.repeat(np.clip((raw.astype(np.float64) - low) / (high - low), 0, 1), 3 // bands, axis=1)
    host = host.astype(np.float32)
    expected, _ = engine.predict(engine.upload(host, valid))
    got, _ = engine.predict(engine.upload(raw, valid, scaling))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not engine.scales_on_device(dtype)  # on a CPU the block tasks keep scaling, in parallel


def test_an_engine_on_another_device_leaves_the_cpu_engines_network_alone():
    """CPU, then another device, then the CPU again, in one process (the engine cache's order when
    a notebook switches devices). The second device is ``meta`` here, standing in for CUDA: moving
    the shared loaded model there would leave the CPU engine with weights it cannot compute on.
    Oracle: the same tiles through a model loaded on its own, never shared."""
    from tilepipe.engine import cached_engine

    spec = ModelSpec(architecture="standin", weights="none")
    images, valid = batch(2)
    alone = Engine(load_model(spec), EngineOptions(device="cpu"))
    expected, _ = alone.predict(alone.upload(images, valid))
    cached_engine.cache_clear()
    try:
        cpu = cached_engine(spec, EngineOptions(device="cpu"))
        other = cached_engine(spec, EngineOptions(device="meta"))
        again = cached_engine(spec, EngineOptions(device="cpu"))
        assert again is cpu
        assert {p.device.type for p in other.module.parameters()} == {"meta"}
        assert {p.device.type for p in cpu.module.parameters()} == {"cpu"}
        assert {p.device.type for p in cpu.model.module.parameters()} == {"cpu"}  # the shared model too
        got, _ = again.predict(again.upload(images, valid))
    finally:
        cached_engine.cache_clear()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_probabilities_are_taken_in_the_thread_that_blends_them(tmp_tif, tmp_path, monkeypatch):
    """A task queues each pass from its feeding thread and blends in its stitch lane; on CUDA the
    lane's stream must wait for the pass's event, so the lane, not the feeder, takes the
    probabilities (``Prediction.take``). Counted here with spies on the CPU path, which runs the
    same calls: every pass queued is taken once, in a stitch-lane thread."""
    import threading

    import tilepipe
    from tilepipe.engine import Prediction

    queued, taken = [], []
    queue, take = Engine.queue, Prediction.take

    def spy_queue(self, batch):
        prediction = queue(self, batch)
        queued.append((id(prediction), threading.current_thread().name))
        return prediction

    def spy_take(self):
        taken.append((id(self), threading.current_thread().name))
        return take(self)

    monkeypatch.setattr(Engine, "queue", spy_queue)
    monkeypatch.setattr(Prediction, "take", spy_take)
    tilepipe.run(str(tmp_tif()), str(tmp_path / "m.zarr"), model="standin", weights="none", tile_size=128,
                 overlap=32, chunk_size=128, block_size=256, batch_size=2, workers=1)
    assert len(queued) >= 4
    assert sorted(i for i, _ in taken) == sorted(i for i, _ in queued)
    assert all(name.startswith("tilepipe-stitch") for _, name in taken)
    assert not any(name.startswith("tilepipe-stitch") for _, name in queued)
