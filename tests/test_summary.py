"""The run summary agrees with the store and with itself, and claims only what the run did.

The runs use the stand-in model: the summary's bookkeeping is the same whatever network ran. Which
stage dominates, and how far stages overlap, depend on the machine and its load, so they are
checked for consistency with the run's own figures, never for a particular outcome; what the
summary says for a given outcome (the overlap, the advice, the GPU tactics) is checked on figures
written out by hand."""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr
from torchvision.models.segmentation import deeplabv3_resnet101

import tilepipe
from tests.conftest import smooth_image, write_geotiff
from tilepipe.model import count_macs
from tilepipe.report.advice import bottleneck
from tilepipe.report.catalog import load_catalog
from tilepipe.report.figures import timing_figures
from tilepipe.report.tactics import tactics_used


STANDIN_MACS_PER_PIXEL = 3 * 8 * 9 + 8 * 4 * 9
"""The stand-in's multiply-adds per output pixel, by hand: a 3x3 convolution from 3 bands to 8
channels, then a 3x3 convolution from 8 channels to 4 classes (biases are additions only)."""


@pytest.fixture(scope="module")
def standin_run(tmp_path_factory):
    """A 256 x 512 scene whose right half is no-data, run once; also the run's wall time as seen
    from outside it (an upper bound of what the summary may report)."""
    tmp = tmp_path_factory.mktemp("summary")
    data = smooth_image(256, 512)
    data[:, :, 256:] = 0  # the right strip (two blocks of one chunk row each) holds no data
    path = write_geotiff(tmp / "half.tif", data, nodata=0)
    out = tmp / "half.zarr"
    started = time.perf_counter()
    summary = tilepipe.run(str(path), str(out), model="standin", weights="none", tile_size=128, overlap=32,
                           chunk_size=128, block_size=256, workers=1)
    return summary.data, out, time.perf_counter() - started


def test_summary_agrees_with_the_store(standin_run):
    d, out, _ = standin_run
    group = zarr.open_group(str(out))
    assert d["output"]["mask_shape"] == list(group["mask"].shape)
    assert d["plan"]["blocks"] == group["blocks"].size == 4  # 2 chunk rows x 2 strips of 256 px
    assert d["plan"]["blocks_no_data"] == 2 and (group["mask"][:, 256:] == 255).all()
    assert group["blocks"][...].all() and tilepipe.open(str(out)).summary == d
    # By hand: 128 px tiles, step 96: rows start at 0, 96 and (snapped to reach row 256) 128;
    # columns at 0, 96, 192, 288, 384. Strip [0, 256) touches columns 0, 96, 192 and strip
    # [256, 512) columns 192, 288, 384: 3 x 3 tiles each. Only the tiles at columns 288 and 384
    # lie wholly in the no-data half (the one at 192 holds data up to column 256): 2 x 3 skipped.
    assert (d["plan"]["tiles_planned"], d["plan"]["tiles_computed"], d["plan"]["tiles_skipped_no_data"]) == (18, 12, 6)


def test_throughput_figures_match_hand_counts_and_the_outside_clock(standin_run):
    """Each figure against a count made here: the image's pixels, the stand-in's multiply-adds by
    hand, the tiles by hand, and the wall time measured around the run."""
    d, _, outside_wall = standin_run
    t, thr = d["timing"], d["throughput"]
    assert thr["megapixels_processed"] == 256 * 512 / 1e6  # every block's core, the no-data ones too
    assert d["model"]["macs_per_tile"] == STANDIN_MACS_PER_PIXEL * 128 * 128  # 8,257,536
    assert 0 < t["wall_seconds"] <= outside_wall + 5e-5  # stored to 4 decimals
    # seconds are stored to 4 decimals and rates to 6: the tolerances allow exactly that rounding
    assert thr["megapixels_per_second"] == pytest.approx(256 * 512 / 1e6 / t["wall_seconds"],
                                                         rel=1e-3 + 5e-5 / t["wall_seconds"], abs=1e-6)
    assert thr["megapixels_per_second"] >= 256 * 512 / 1e6 / outside_wall - 1e-6
    # the parts that run one after another add up to the wall time
    assert sum(t["sequential_seconds"].values()) == pytest.approx(t["wall_seconds"], rel=0.10)
    # where the stages' busy time exceeds the blocks' wall time (the reader thread prepares the next
    # batch while the model runs) the summary says they overlapped, and only then
    busy = sum(t["stage_busy_seconds"].values())
    overlapped = busy > 1.02 * t["sequential_seconds"]["blocks"]
    assert ("overlapped" in t["overlap"]) == overlapped
    assert ("tactic-overlap-io-compute" in {x["id"] for x in d["tactics"]}) == overlapped
    forward = t["stage_busy_seconds"]["forward"]
    tflops = 2 * STANDIN_MACS_PER_PIXEL * 128 * 128 * 12 / forward / 1e12  # 12 tiles through the network
    assert thr["model_tflops_while_running"] == pytest.approx(tflops, rel=1e-3 + 5e-5 / forward, abs=1e-6)
    # the bottleneck named is the stage that was busiest in this run, whichever it was
    assert t["stage_busy_seconds"][d["bottleneck"]["stage"]] == max(t["stage_busy_seconds"].values())


def test_overlapping_stages_are_stated_not_summed():
    """Busy seconds summed over block tasks may exceed the blocks' wall time; the summary says so."""
    busy = {"read": 2.0, "preprocess": 0.5, "forward": 4.0, "stitch": 1.0, "write": 0.5}  # 8 s of stage work
    parts = {"setup": 1.0, "blocks": 4.0, "pyramid": 0.25, "finalize": 0.25}
    t = timing_figures(busy, parts, wall=5.5, workers=2)
    assert t["overlap"] == ("stages overlapped (2 block task(s) at once, each preparing its next batches while the "
                            "model runs): 8.00 s of stage work in 4.00 s of wall time (2.00x), so stage times add up "
                            "to more than the wall time")
    assert t["busy_over_blocks_wall"] == 2.0 and t["stage_share_of_block_busy"]["forward"] == 0.5
    assert t["stage_share_of_wall"]["read"] == 0.3636 and t["sequential_seconds"] == parts
    serial = timing_figures(busy, {**parts, "blocks": 8.0}, wall=9.5, workers=1)
    assert serial["overlap"] == "stages ran one after another: 8.00 s of stage work in 8.00 s of wall time"


def _timed(stage: str, device: str = "cpu", precision: str = "fp32", setup: float = 0.5, stride: int = 16) -> dict:
    """The figures the advice reads: ``stage`` busy 3 s of a 5 s wall time, the others 0.25 s."""
    busy = {s: 3.0 if s == stage else 0.25 for s in ("read", "preprocess", "forward", "stitch", "write")}
    return {"timing": {"stage_busy_seconds": busy, "wall_seconds": 5.0, "sequential_seconds": {"setup": setup}},
            "engine": {"device": device, "precision": precision, "batch_size": 8},
            "throughput": {"model_tflops_while_running": 0.1234},
            "plan": {"output_stride": stride, "overlap_cost_factor": 1.1},
            "cost": {"other_output_strides": {"16": 4.2e9}}, "model": {"macs_per_tile": 15.1e9}}


def test_advice_names_the_change_for_the_stage_that_dominated():
    resnet = SimpleNamespace(spec=SimpleNamespace(architecture="deeplabv3_resnet101"))
    assert bottleneck(_timed("forward"), None, resnet) == {"stage": "forward", "share_of_wall": 0.6, "advice": [
        "the network ran on the CPU at 0.123 TFLOP/s; a CUDA GPU (--device cuda) is the change that matters"]}
    assert bottleneck(_timed("forward", "cuda:0", "fp32"), None, resnet)["advice"] == [
        "use --precision bf16 (tensor cores)", "try a larger --batch-size than 8"]
    assert bottleneck(_timed("forward", "cuda:0", "bf16", stride=8), None, resnet)["advice"] == [
        "try a larger --batch-size than 8",
        "--output-stride 16 needs 4.2 G multiply-adds per tile instead of 15.1 G (check the accuracy trade-off)"]
    assert bottleneck(_timed("write", setup=2.0), None, resnet)["advice"] == [
        "setup (opening the input, loading weights) took 2.0 s of 5.0 s: a fixed cost that larger inputs amortise",
        "writing dominates: use a faster disk or a larger --chunk-size"]


def test_a_gpu_run_claims_the_tactics_its_engine_reports(standin_run):
    d = copy.deepcopy(standin_run[0])
    d["engine"].update(device="cuda:0", precision="bf16", tactics={
        **d["engine"]["tactics"], "mixed_precision": "bf16", "cudnn_benchmark": True, "pinned_memory": True})
    claimed = {t["id"]: t["text"] for t in tactics_used(d)}
    assert set(claimed) == {t["id"] for t in standin_run[0]["tactics"]} | {
        "tactic-mixed-precision", "tactic-cudnn-autotune", "tactic-pinned-memory"}
    passes = d["plan"]["forward_calls"]
    assert claimed["tactic-pinned-memory"] == (f"Each of the {passes} batches was copied from pinned host memory "
                                               "with non_blocking=True.")
    assert claimed["tactic-mixed-precision"].startswith("Convolutions ran under bf16 autocast")


@pytest.mark.real_model
def test_multiply_adds_match_torchvisions_published_figure():
    """torchvision publishes 258.743 GFLOPS (multiply-adds) at 520x520 for the model with its aux head."""
    with torch.device("meta"):
        model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    assert count_macs(model, 520, 520) / 1e9 == pytest.approx(258.743, rel=0.05)


def test_random_weights_are_in_the_first_lines(tmp_path):
    path = write_geotiff(tmp_path / "a.tif", smooth_image(64, 64))
    summary = tilepipe.run(str(path), str(tmp_path / "a.zarr"), model="standin", weights="none")
    first_lines = summary.to_markdown().splitlines()[:4]
    assert any("RANDOM WEIGHTS" in line for line in first_lines)
    assert summary["warnings"][0].startswith("RANDOM WEIGHTS")


def test_cpu_fp32_run_claims_no_gpu_tactics_and_cites_only_catalog_ids(standin_run):
    d, out, _ = standin_run
    ids = {t["id"] for t in d["tactics"]}
    assert d["engine"]["device"] == "cpu" and d["engine"]["precision"] == "fp32"
    assert not ids & {"tactic-mixed-precision", "tactic-pinned-memory", "tactic-cudnn-autotune"}
    assert "tactic-skip-nodata" in ids  # one block held no data
    catalog = load_catalog()
    cited = {ref for t in d["tactics"] for ref in t["references"]}
    assert cited and cited <= set(catalog)
    assert tilepipe.open(str(out)).summary == d


def test_summary_figures_come_from_the_run(tmp_path):
    """Two runs of different sizes report different, proportionate figures (nothing canned)."""
    small = write_geotiff(tmp_path / "s.tif", smooth_image(128, 128))
    large = write_geotiff(tmp_path / "l.tif", smooth_image(256, 512))
    kw = dict(model="standin", weights="none", tile_size=64, overlap=16, chunk_size=64, block_size=128)
    a = tilepipe.run(str(small), str(tmp_path / "s.zarr"), **kw).data
    b = tilepipe.run(str(large), str(tmp_path / "l.zarr"), **kw).data
    assert (a["input"]["megapixels"], b["input"]["megapixels"]) == (pytest.approx(0.016384), pytest.approx(0.131072))
    assert b["plan"]["tiles_computed"] > a["plan"]["tiles_computed"]
    assert a["model"]["macs_per_tile"] == b["model"]["macs_per_tile"] > 0
    assert np.isfinite(b["throughput"]["megapixels_per_second"])
