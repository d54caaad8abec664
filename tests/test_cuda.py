"""The CUDA path, on a CUDA device: skipped without one (``-m cuda`` selects only these).

Small images and the stand-in model wherever the question is about streams, scaling, stitching or
scheduling; the real DeepLabV3-ResNet101 (random weights) where the question is its precision.
Tolerances are stated per test. fp32 on a recent NVIDIA GPU means TF32 convolutions by default
(cuDNN's ``allow_tf32``), about 3 decimal digits, so GPU-vs-CPU comparisons allow 5e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import tilepipe
from tests.conftest import smooth_image, write_geotiff
from tilepipe.engine import Engine, EngineOptions
from tilepipe.grid import Window
from tilepipe.model import ModelSpec, load_model
from tilepipe.sources.scaling import IntensityScaling
from tilepipe.stitch import StripStitcher

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TF32_TOLERANCE = dict(rtol=0.0, atol=5e-3)


def engine(model: str = "standin", **options) -> Engine:
    return Engine(load_model(ModelSpec(architecture=model, weights="none")),
                  EngineOptions(**{"device": "cuda", **options}))


def tiles(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([smooth_image(size, size, seed=seed + i).astype(np.float32) / 255 for i in range(n)])
    return images, np.ones((n, size, size), bool)


def reference(images: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    """The stand-in's probabilities on the CPU in fp32: the oracle for the device's."""
    cpu = Engine(load_model(ModelSpec(architecture="standin", weights="none")),
                 EngineOptions(device="cpu", batch_size=len(images)))
    return cpu.predict(cpu.upload(images, valid))[0]


def test_uploads_queued_on_the_side_stream_are_predicted_in_order():
    """Three batches uploaded ahead (as the reader pool does) while none has been predicted: each
    prediction must wait for its own copy, so each equals the CPU's for its own tiles."""
    gpu = engine(precision="fp32", batch_size=4)
    batches = [tiles(4, 256, seed=10 * k) for k in range(3)]
    uploaded = [gpu.upload(*b) for b in batches]
    assert all(u.images.is_cuda and u.ready is not None for u in uploaded)
    for (images, valid), batch in zip(batches, uploaded):
        probs, timer = gpu.predict(batch)
        torch.testing.assert_close(probs.cpu(), reference(images, valid), **TF32_TOLERANCE)
        assert timer.seconds > 0
    assert gpu.describe()["gpu_busy_fraction"] is not None  # two or more passes: a steady state exists


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_on_the_standin_is_close_to_fp32(precision, dtype):
    """Tolerance 2e-2 on probabilities: inputs and outputs rounded to 8 (bf16) or 11 (fp16)
    mantissa bits through two convolutions move a probability by ~1e-3."""
    gpu = engine(precision=precision, batch_size=4)
    images, valid = tiles(4, 128)
    probs, _ = gpu.predict(gpu.upload(images, valid))
    assert gpu.describe()["tactics"]["mixed_precision"] == precision
    torch.testing.assert_close(probs.cpu(), reference(images, valid), rtol=0.0, atol=2e-2)


def calibrated_resnet(images: np.ndarray):
    """DeepLabV3-ResNet101 with random weights whose BatchNorm statistics are recomputed on these
    tiles, so activations have a trained network's scales: uncalibrated, a random ResNet-101's
    activations grow past fp16's range (65504) and its fp16 output is NaN."""
    loaded = load_model(ModelSpec(architecture="deeplabv3_resnet101", weights="none", output_stride=8))
    module = loaded.module.cuda()
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    mean = torch.tensor(loaded.mean, device="cuda")[None, :, None, None]
    std = torch.tensor(loaded.std, device="cuda")[None, :, None, None]
    module.train()
    with torch.no_grad():
        module((torch.from_numpy(images).cuda() - mean) / std)
    module.eval()
    return loaded


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_runs_the_real_architecture_in_that_precision(precision, dtype):
    """The real network's convolutions run in the asked dtype and give finite probabilities.

    Not asserted: closeness to fp32. A random ResNet-101 amplifies rounding: measured with this
    CPU's bf16 autocast on calibrated random weights, its logits differ from fp32 by 68% (relative
    L2) and fp16's by 30%, while the stand-in above agrees to 1e-3. Trained weights are better
    conditioned; with them, compare the masks of a real scene instead."""
    images, valid = tiles(4, 128, seed=20)
    loaded = calibrated_resnet(images)
    gpu = Engine(loaded, EngineOptions(device="cuda", precision=precision, batch_size=4))
    seen = []
    hook = loaded.module.backbone.conv1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        probs, _ = gpu.predict(gpu.upload(images, valid))
    finally:
        hook.remove()
    assert seen == [dtype]
    assert probs.dtype == torch.float32 and torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones_like(probs[:, 0]), rtol=0, atol=1e-4)


def test_auto_batch_size_fits_and_gives_the_fixed_batch_mask(tmp_path):
    """--batch-size auto measures a probe pass and picks a batch (1..64); the mask it gives must be
    the one batch 4 gives (batches are independent: the stand-in has no batch statistics)."""
    path = write_geotiff(tmp_path / "img.tif", smooth_image(384, 448, seed=5))
    masks, batches = [], []
    for batch_size in ("auto", 4):
        out = tmp_path / f"{batch_size}.zarr"
        summary = tilepipe.run(str(path), str(out), model="standin", weights="none", device="cuda", tile_size=128,
                               overlap=32, chunk_size=128, block_size=256, batch_size=batch_size, precision="fp32")
        batches.append(summary.data["engine"]["batch_size"])
        masks.append(zarr.open_group(str(out))["mask"][...])
    (shape, chosen), = batches[0].items()
    assert shape == "128x128" and 1 <= chosen <= Engine.AUTO_MAX_BATCH
    disagreement = float((masks[0] != masks[1]).mean())
    assert disagreement == 0.0, f"auto batch {chosen} vs 4: {disagreement:.3e} of pixels differ"


@pytest.mark.parametrize("bands,dtype,low,high", [(3, np.uint8, 0.0, 255.0), (1, np.int16, -160.0, 240.0)])
def test_scaling_on_the_device_matches_the_host(bands, dtype, low, high):
    """Raw tiles scaled by the engine on the GPU against the host's IntensityScaling.apply,
    through the same network and batch shape: the only difference can be the scaling's float
    rounding (1 ulp), hence 1e-5."""
    scaling = IntensityScaling("fixed", (low,) * bands, (high,) * bands, "test")
    rng = np.random.default_rng(1)
    raw = rng.integers(np.iinfo(dtype).min // 2, np.iinfo(dtype).max // 2, (2, bands, 64, 64)).astype(dtype)
    valid = np.ones((2, 64, 64), bool)
    gpu = engine(precision="fp32", batch_size=2)
    assert gpu.scales_on_device(dtype)
    host = np.stack([np.repeat(scaling.apply(t), 3 // bands, axis=0) for t in raw])
    expected, _ = gpu.predict(gpu.upload(host, valid))
    got, _ = gpu.predict(gpu.upload(raw, valid, scaling))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["gaussian", "crop"])
def test_stitching_on_the_gpu_equals_the_cpu(mode):
    """The same tiles blended on both devices. Tolerance: scores within 1e-5 relative (the same
    float32 sums in the same order; the Gaussian window's exp may differ by an ulp), labels equal
    wherever the top two classes are more than 1e-4 apart."""
    core = Window(64, 64, 160, 192)
    lattice = [Window(r, c, 128, 128) for r in range(0, 256, 96) for c in range(0, 288, 96)]
    rng = np.random.default_rng(7)
    probs = [torch.from_numpy(rng.dirichlet(np.ones(5), (128, 128)).astype(np.float32)).permute(2, 0, 1).contiguous()
             for _ in lattice]
    valid = np.ones((core.height, core.width), bool)
    scores, labels = {}, {}
    for device in ("cpu", "cuda"):
        stitcher = StripStitcher(core, 5, mode, torch.device(device), tile_height=128)
        starts = sorted({t.row for t in lattice if t.intersection(core)})
        closed_scores, closed_labels = [], []
        for k, row in enumerate(starts):  # tile rows in lattice order, closing the rows above the next
            for tile, p in zip(lattice, probs):
                if tile.row == row:
                    stitcher.add(tile, p.to(device))
            stop = min(starts[k + 1], core.row_stop) if k + 1 < len(starts) else core.row_stop
            if stop > stitcher.top:
                closed_scores.append(stitcher.scores[:, :stop - stitcher.top].cpu().clone())
                closed_labels.append(stitcher.finish(stop, valid[:stop - stitcher.top])[0])
        scores[device], labels[device] = torch.cat(closed_scores, dim=1), np.concatenate(closed_labels)
    torch.testing.assert_close(scores["cuda"], scores["cpu"], rtol=1e-5, atol=1e-7)
    top2 = torch.sort(scores["cpu"], dim=0).values[-2:]
    clear = ((top2[1] - top2[0]) > 1e-4 * top2[1].clamp_min(1e-30)).numpy()
    np.testing.assert_array_equal(labels["cuda"][clear], labels["cpu"][clear])


def test_masks_do_not_depend_on_workers_or_work_split(tmp_path):
    """The project's guarantee, on the GPU at the default precision: byte-identical masks for 1 and
    3 workers and for another block size and batch size. If cuDNN ever breaks it, the message
    gives the measured disagreement."""
    path = write_geotiff(tmp_path / "img.tif", smooth_image(320, 352, seed=3))
    masks = {}
    for workers, block_size, batch_size in [(1, 128, 4), (3, 128, 4), (2, 256, 3)]:
        out = tmp_path / f"{workers}-{block_size}-{batch_size}.zarr"
        tilepipe.run(str(path), str(out), model="standin", weights="none", device="cuda", tile_size=128, overlap=32,
                     chunk_size=128, block_size=block_size, workers=workers, batch_size=batch_size)
        masks[(workers, block_size, batch_size)] = zarr.open_group(str(out))["mask"][...]
    first, *others = masks
    for key in others:
        differ = float((masks[key] != masks[first]).mean())
        assert differ == 0.0, f"{key} vs {first}: {differ:.3e} of pixels differ"


def test_a_run_reports_its_gpu_busy_fraction(tmp_path):
    path = write_geotiff(tmp_path / "img.tif", smooth_image(512, 512, seed=2))
    summary = tilepipe.run(str(path), str(tmp_path / "m.zarr"), model="standin", weights="none", device="cuda",
                           tile_size=128, overlap=32, chunk_size=128, block_size=256, batch_size=2)
    data = summary.data
    assert 0.0 < data["engine"]["gpu_busy_fraction"] <= 1.0
    assert data["timing"]["stage_busy_seconds"]["forward"] > 0
    assert data["engine"]["tactics"]["event_timing"] is True
    assert "GPU busy" in summary.to_markdown()


def test_torch_compile_runs_for_real():
    """A real torch.compile (Inductor) of the stand-in: the first pass per shape is warm-up, the
    next one is timed on the device; both equal the eager engine's within 1e-4 (fused kernels may
    round differently)."""
    eager = engine(precision="fp32", batch_size=4)
    compiled = engine(precision="fp32", batch_size=4, compile=True)
    images, valid = tiles(3, 128, seed=30)
    expected, _ = eager.predict(eager.upload(images, valid))
    first, warm = compiled.predict(compiled.upload(images, valid))
    again, timed = compiled.predict(compiled.upload(images, valid))
    assert warm.seconds == 0.0 and compiled.warmup_seconds > 0 and timed.seconds > 0
    assert first.shape == expected.shape == (3, 4, 128, 128)
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-4)


def test_cpu_then_cuda_then_cpu_engines_keep_their_own_weights():
    """The engine cache's order in a notebook that switches devices: the CUDA engine gets its own
    copy of the shared loaded model, so the CPU engine, asked again, still computes on the CPU
    and gives what it gave before (exactly: the same CPU kernels on the same weights)."""
    from tilepipe.engine import cached_engine

    spec = ModelSpec(architecture="standin", weights="none")
    images, valid = tiles(2, 64, seed=40)
    cached_engine.cache_clear()
    try:
        cpu = cached_engine(spec, EngineOptions(device="cpu", batch_size=2))
        before, _ = cpu.predict(cpu.upload(images, valid))
        gpu = cached_engine(spec, EngineOptions(device="cuda", precision="fp32", batch_size=2))
        on_gpu, _ = gpu.predict(gpu.upload(images, valid))
        again = cached_engine(spec, EngineOptions(device="cpu", batch_size=2))
        after, _ = again.predict(again.upload(images, valid))
    finally:
        cached_engine.cache_clear()
    assert again is cpu
    assert {p.device.type for p in cpu.module.parameters()} == {"cpu"}
    assert {p.device.type for p in gpu.module.parameters()} == {"cuda"}
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(on_gpu.cpu(), before, **TF32_TOLERANCE)


def test_probabilities_taken_in_another_thread_wait_for_their_pass():
    """The pass is queued from a thread whose current stream is a side stream, and its
    probabilities are copied out in another thread (a block's stitch lane does this), on that
    thread's default stream. A spin kernel of 4e8 GPU clock cycles ahead of the network on the compute stream makes
    reading too early certain to see unwritten memory; ``take`` orders the reading thread's stream
    after the pass, so the copy equals the CPU's probabilities (TF32 tolerance)."""
    from concurrent.futures import ThreadPoolExecutor

    gpu = engine(precision="fp32", batch_size=4)
    gpu.module.register_forward_pre_hook(lambda module, args: torch.cuda._sleep(400_000_000))  # 0.2-0.4 s at 1-2 GHz
    images, valid = tiles(4, 128, seed=50)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        prediction = gpu.queue(gpu.upload(images, valid))
    with ThreadPoolExecutor(1, thread_name_prefix="tilepipe-stitch") as lane:
        copied = lane.submit(lambda: prediction.take().cpu()).result()
    torch.testing.assert_close(copied, reference(images, valid), **TF32_TOLERANCE)
