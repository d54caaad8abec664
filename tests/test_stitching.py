"""Tiled results against whole-image passes, and independence from how the work is split."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal.windows import gaussian
from torchvision.models.segmentation import deeplabv3_resnet101

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tilepipe.grid import TileGrid, Window
from tilepipe.model import ModelSpec, load_model
from tilepipe.partition import Plan
from tilepipe.sink import NO_LABEL
from tilepipe.stitch import StripStitcher
from tilepipe.testing import write_ct_series


def whole_image_probabilities(module, path, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one forward pass over the whole image, prepared as tilepipe prepares tiles
    (uint8 / 255, ImageNet normalisation, invalid pixels at zero)."""
    with rasterio.open(path) as src:
        pixels = src.read([1, 2, 3]).astype(np.float32) / 255.0
        valid = src.dataset_mask() > 0
    x = torch.from_numpy(pixels)[None]
    x = (x - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None]
    x = x * torch.from_numpy(valid)[None, None]
    with torch.inference_mode():
        probs = torch.softmax(module(x)["out"].float(), dim=1)[0].numpy()
    return probs, valid


def margin(probs: np.ndarray) -> np.ndarray:
    top2 = np.sort(probs, axis=0)[-2:]
    return top2[1] - top2[0]


def test_standin_tiled_matches_whole_image_pass(tmp_path):
    """The stand-in has no global pooling and a 2 px receptive radius, far inside the 16 px each
    tile keeps around its owned area with crop stitching, so tiling cannot change its output.

    Tolerance: probabilities within 1e-4 (the convolution may sum in another order on a tile than
    on the whole image, ~1e-7 relative), and labels identical wherever the top two classes are more
    than 1e-4 apart, which is every pixel but near-exact ties."""
    path = shared_file("geotiff", "RGB.byte.tif")
    out = tmp_path / "crop.zarr"
    summary = tilepipe.run(str(path), str(out), model="standin", weights="none", tile_size=128, overlap=32,
                           chunk_size=128, block_size=256, blending="crop", probabilities=True)
    assert summary["plan"]["blocks"] >= 9 and summary["plan"]["lattice_tiles"] >= 36
    model = load_model(ModelSpec(architecture="standin", weights="none"))
    expected, valid = whole_image_probabilities(model.module, path, model.mean, model.std)
    group = zarr.open_group(str(out))
    probs = group["probabilities"][...].astype(np.float32) / 255.0
    assert np.abs(probs - expected)[:, valid].max() <= 0.5 / 255 + 1e-4  # uint8 quantisation + tolerance
    labels = group["mask"][...]
    decisive = valid & (margin(expected) > 1e-4)
    assert (labels[decisive] == expected.argmax(0)[decisive]).all()
    assert (labels[~valid] == NO_LABEL).all()

    blended = tilepipe.run(str(path), str(tmp_path / "gauss.zarr"), model="standin", weights="none", tile_size=128,
                           overlap=32, chunk_size=128, block_size=256)
    gauss = zarr.open_group(str(tmp_path / "gauss.zarr"))["mask"][...]
    agreement = (gauss[valid] == expected.argmax(0)[valid]).mean()
    print(f"stand-in, Gaussian blending: agreement with the whole-image pass {agreement:.5f}")
    # Gaussian blending also weighs each tile's 2 px border, where its zero padding differs from the
    # real neighbours; the weight there is ~exp(-8) of the centre, so only near-ties can flip.
    assert agreement > 0.999 and blended.ok


@pytest.mark.real_model
def test_single_tile_image_equals_whole_image_forward(tmp_path):
    path = write_geotiff(tmp_path / "small.tif", smooth_image(200, 296))
    out = tmp_path / "m.zarr"
    summary = tilepipe.run(str(path), str(out), weights="none", workers=1)
    assert summary["plan"]["tiles_computed"] == 1 and summary["plan"]["tile"] == [200, 296]
    model = load_model(ModelSpec(weights="none"))
    expected, valid = whole_image_probabilities(model.module, path, model.mean, model.std)
    mask = zarr.open_group(str(out))["mask"][...]
    assert (mask == expected.argmax(0)).all()


def test_small_image_is_padded_to_the_stride_and_cropped_back(tmp_path):
    """Bookkeeping at output stride 16, so with the cheapest network that has it (LR-ASPP)."""
    path = write_geotiff(tmp_path / "odd.tif", smooth_image(37, 61))
    summary = tilepipe.run(str(path), str(tmp_path / "m.zarr"), model="lraspp_mobilenet_v3_large", weights="none",
                           workers=1)
    assert summary["plan"]["output_stride"] == 16 and summary["plan"]["tile"] == [48, 64]  # 37 -> 48, 61 -> 64
    assert zarr.open_group(str(tmp_path / "m.zarr"))["mask"].shape == (37, 61)


def calibrated_checkpoint(path, image: np.ndarray) -> str:
    """Random ResNet-101 weights whose BatchNorm statistics were measured on the image's crops."""
    torch.manual_seed(0)
    model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    x = torch.from_numpy(image.astype(np.float32) / 255.0)
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    crops = torch.stack([x[:, r:r + 192, c:c + 192] for r in (0, 200, 400) for c in (0, 200, 400)])
    model.train()
    with torch.no_grad():
        model(crops[:5])
        model(crops[5:])
    torch.save(model.eval().state_dict(), path)
    return str(path)


@pytest.mark.real_model
def test_seams_with_the_real_model_are_reported(tmp_path, capsys):
    """DeepLabV3's ASPP image pooling sees only its tile, so tiled and whole-image results differ
    by design; what must hold is that a pixel only one tile covers takes that tile's own forward
    pass, in both stitching modes. The oracle is the network run in the test on that tile's
    window alone (cut with rasterio). The agreement with a whole-image pass at tile borders and in
    tile interiors is printed as a diagnostic (random BatchNorm-calibrated weights: not a quality
    figure)."""
    path = shared_file("geotiff", "cogeo.tif")
    with rasterio.open(path) as src:
        image = src.read(window=rasterio.windows.Window(0, 0, 640, 640))
    crop = write_geotiff(tmp_path / "crop.tif", image)
    first_tile = write_geotiff(tmp_path / "tile.tif", image[:, :384, :384])
    weights = calibrated_checkpoint(tmp_path / "calibrated.pth", image)
    model = load_model(ModelSpec(weights=weights))
    expected, valid = whole_image_probabilities(model.module, crop, model.mean, model.std)
    reference = expected.argmax(0)
    tile_alone = whole_image_probabilities(model.module, first_tile, model.mean, model.std)[0].argmax(0)
    border = np.zeros(reference.shape, bool)
    plan = tilepipe.plan(str(crop), weights=weights, tile_size=384, overlap=64)
    assert plan["lattice_tiles"] == 4
    for start in (256, 384):  # inner tile edges on both axes (tiles at 0 and 256, 384 px wide)
        border[max(start - 16, 0):start + 16, :] = True
        border[:, max(start - 16, 0):start + 16] = True
    lines = []
    for blending in ("crop", "gaussian"):
        out = tmp_path / f"{blending}.zarr"
        tilepipe.run(str(crop), str(out), weights=weights, tile_size=384, overlap=64, blending=blending, workers=1)
        mask = zarr.open_group(str(out))["mask"][...]
        # rows and columns 0-255 lie in the first tile only (the next starts at 256)
        only_first = mask[:256, :256] == tile_alone[:256, :256]
        assert only_first.mean() > 0.999, f"{blending}: {only_first.mean():.4f} agree with the tile's own pass"
        same = mask == reference
        lines.append(f"{blending:>8}: overall {same.mean():.3f}, tile borders {same[border].mean():.3f}, "
                     f"interiors {same[~border].mean():.3f}")
    with capsys.disabled():
        print("\nreal-model seams (random BN-calibrated weights, 640x640 cogeo crop, 384 px tiles, 64 px overlap):")
        print("\n".join(lines))


@pytest.mark.parametrize("model", ["standin", pytest.param("deeplabv3_resnet101", marks=pytest.mark.real_model)])
def test_workers_and_block_sizes_do_not_change_a_byte(tmp_path, model):
    path = write_geotiff(tmp_path / "img.tif", smooth_image(320, 352, seed=3))
    masks = []
    for workers, block_size, batch_size in [(1, 128, 4), (2, 128, 4), (2, 256, 3)]:
        out = tmp_path / f"{workers}-{block_size}-{batch_size}.zarr"
        tilepipe.run(str(path), str(out), model=model, weights="none", tile_size=128, overlap=32, chunk_size=128,
                     block_size=block_size, workers=workers, batch_size=batch_size)
        masks.append(zarr.open_group(str(out))["mask"][...])
    assert all(np.array_equal(masks[0], m) for m in masks[1:])


def tile_probabilities(tile, classes: int) -> torch.Tensor:
    """Made-up softmax output of one tile, the same whichever unit asks for it."""
    g = torch.Generator().manual_seed(tile.row * 100003 + tile.col)
    return torch.softmax(3 * torch.randn((classes, tile.height, tile.width), generator=g), dim=0)


def streamed_labels(plan: Plan, units, classes: int, mode: str) -> np.ndarray:
    """Drive the stitcher as a task does: tile rows in order, left to right, closing final rows."""
    out = np.full((plan.height, plan.width), 77, np.uint8)
    for unit in units:
        stitcher = StripStitcher(unit.core, classes, mode, torch.device("cpu"), plan.tile_height)
        for p, row in enumerate(unit.tile_rows):
            for tile in unit.row_tiles(row):
                stitcher.add(tile, tile_probabilities(tile, classes))
            top, stop = stitcher.top, unit.final_rows(p)
            if stop > top:
                labels, _ = stitcher.finish(stop, np.ones((stop - top, unit.core.width), bool))
                out[top:stop, unit.core.col:unit.core.col_stop] = labels
    return out


def whole_plane_blend(plan: Plan, classes: int) -> np.ndarray:
    """The oracle, computed another way: float64 sums over the whole plane, each tile weighted by
    scipy's Gaussian window with MONAI's ``sigma_scale`` of 1/8 of the tile side per axis."""
    acc = np.zeros((classes, plan.height, plan.width))
    for r in plan.row_starts:
        for c in plan.col_starts:
            tile = Window(r, c, plan.tile_height, plan.tile_width)
            h, w = min(tile.height, plan.height - r), min(tile.width, plan.width - c)
            weight = np.outer(gaussian(tile.height, std=tile.height / 8), gaussian(tile.width, std=tile.width / 8))
            acc[:, r:r + h, c:c + w] += (tile_probabilities(tile, classes).double().numpy() * weight)[:, :h, :w]
    return acc


@st.composite
def split_plans(draw):
    tile = 8 * draw(st.integers(2, 6))
    overlap = 8 * draw(st.integers(0, tile // 8 - 1))
    chunk = draw(st.sampled_from([8, 16, 24]))
    height, width = draw(st.integers(5, 90)), draw(st.integers(5, 90))
    blocks = [chunk * draw(st.integers(1, 4)) for _ in range(2)]
    return [Plan(height, width, TileGrid(tile, overlap, 8), chunk, b) for b in blocks], draw(st.integers(1, 6))


@settings(max_examples=60, deadline=None)
@given(split_plans(), st.sampled_from(["gaussian", "crop"]))
def test_streamed_strips_give_the_same_bytes_for_any_split(plans, mode):
    """Strips of any width, cut into any number of units, blend every pixel from the same tiles in
    the same order: byte-identical labels. The one-unit-per-strip labels also match a float64
    whole-plane blend wherever its top two classes are not a near-tie."""
    (a, b), pieces = plans
    classes = 3
    reference = streamed_labels(a, a.units(), classes, mode)
    assert (reference != 77).all()  # every pixel was finished
    assert np.array_equal(streamed_labels(a, a.units(min_units=pieces), classes, mode), reference)
    assert np.array_equal(streamed_labels(b, b.units(min_units=pieces), classes, mode), reference)
    if mode == "gaussian":
        expected = whole_plane_blend(a, classes)
        top2 = np.sort(expected, axis=0)[-2:]
        decisive = (top2[1] - top2[0]) > 1e-5 * top2[1]
        assert (reference[decisive] == expected.argmax(0)[decisive]).all()


def test_slices_of_a_stack_share_forward_passes(tmp_path):
    """A 64 px slice is one tile: 20 slices in batches of 4 must not mean 20 forward passes of one.
    The grouping changes which tiles share a pass, never a byte of the mask."""
    write_ct_series(tmp_path / "ct", slices=20, size=64)
    masks, calls = [], []
    for workers, batch_size in [(1, 4), (2, 1)]:
        out = tmp_path / f"{workers}-{batch_size}.zarr"
        summary = tilepipe.run(str(tmp_path / "ct"), str(out), model="standin", weights="none", tile_size=64,
                               overlap=16, chunk_size=64, block_size=64, workers=workers, batch_size=batch_size)
        masks.append(zarr.open_group(str(out))["mask"][...])
        calls.append(summary["plan"]["forward_calls"])
        assert summary["plan"]["tiles_computed"] == 20
    assert calls == [6, 20]  # two tasks of 10 slices, 3 batches each; batch 1 is one pass per slice
    assert np.array_equal(masks[0], masks[1])
