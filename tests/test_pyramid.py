"""The label pyramid and its OME-NGFF / multiscales description, on a multi-block scene, the
whole-slide sample and a DICOM series (stand-in model: these tests are about the store).

The oracle for every level is ``scipy.stats.mode`` over 2x2 windows of the level above, starting
from the stored level 0, with no-data (255) omitted and ties going to the smaller class (scipy's
rule); the physical scales come from the DICOM headers read here with pydicom."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import scipy.stats
import zarr

import tilepipe
import tilepipe.schedule
from tests.conftest import shared_file, smooth_image, write_geotiff
from tilepipe.blocks import BlockReport
from tilepipe.pyramid import build_pyramid
from tilepipe.sink import MaskStore

SCENE = dict(model="standin", weights="none", tile_size=128, overlap=32, chunk_size=256, block_size=512)


def windows_2x2(level: np.ndarray) -> np.ndarray:
    """(..., h/2, w/2, 4) float: each 2x2 window's values, no-data and the padding past an odd edge NaN."""
    h, w = level.shape[-2:]
    padded = np.full(level.shape[:-2] + (h + h % 2, w + w % 2), np.nan)
    padded[..., :h, :w] = np.where(level == 255, np.nan, level)
    half = (padded.shape[-2] // 2, padded.shape[-1] // 2)
    windows = padded.reshape(*level.shape[:-2], half[0], 2, half[1], 2)
    return np.moveaxis(windows, -3, -2).reshape(*level.shape[:-2], *half, 4)


def mode_2x2_scipy(level: np.ndarray) -> np.ndarray:
    """``scipy.stats.mode`` of each window, NaN omitted (ties: scipy returns the smallest value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-no-data windows: "too small after omitting NaNs"
        found = scipy.stats.mode(windows_2x2(level), axis=-1, nan_policy="omit").mode
    return np.where(np.isnan(found), 255, found).astype(np.uint8)


def mode_2x2_counting(level: np.ndarray, num_classes: int) -> np.ndarray:
    """The same by counting each class per window (fast enough for the slide): argmax takes the
    first, i.e. smallest, of tied classes; a window with no class is no-data."""
    windows = windows_2x2(level)
    counts = np.stack([(windows == c).sum(axis=-1) for c in range(num_classes)], axis=-1)
    return np.where(counts.max(axis=-1) > 0, counts.argmax(axis=-1), 255).astype(np.uint8)


def test_the_two_oracles_agree():
    level = np.random.default_rng(0).choice([0, 1, 2, 3, 255], size=(2, 37, 50)).astype(np.uint8)
    assert np.array_equal(mode_2x2_scipy(level), mode_2x2_counting(level, 4))


def assert_pyramid_is_the_mode(out: Path, num_classes: int, levels_expected: int) -> list[np.ndarray]:
    group = zarr.open_group(str(out), mode="r")
    level = group["mask"][...]
    layout = group.attrs["multiscales"]["layout"]
    assert [entry["asset"] for entry in layout] == ["mask"] + [f"pyramid/{n}/mask" for n in range(1, levels_expected + 1)]
    levels = [level]
    for n in range(1, levels_expected + 1):
        expected = mode_2x2_counting(level, num_classes) if level.size > 5e5 else mode_2x2_scipy(level)
        stored = group[f"pyramid/{n}/mask"][...]
        assert stored.shape == expected.shape
        assert np.array_equal(stored, expected), f"level {n} differs from the 2x2 mode of level {n - 1}"
        assert set(np.unique(stored)) <= set(range(num_classes)) | {255}
        assert layout[n]["transform"]["scale"][-2:] == [2.0, 2.0] and layout[n]["resampling_method"] == "mode"
        level = expected
        levels.append(stored)
    assert max(levels[-1].shape[-2:]) <= 512 < max(levels[-2].shape[-2:])
    return levels


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 1100 x 2600 scene: 5 strips of 5 blocks (one 256 px chunk row each), its right edge and a
    corner no-data."""
    folder = tmp_path_factory.mktemp("scene")
    data = smooth_image(1100, 2600, seed=3)
    data[:, :, 2450:] = 0
    data[:, 900:, :200] = 0
    tif = write_geotiff(folder / "scene.tif", data, nodata=0)
    out = folder / "scene.zarr"
    summary = tilepipe.run(str(tif), str(out), **SCENE)
    return tif, out, summary


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    out = tmp_path_factory.mktemp("slide") / "slide.zarr"
    summary = tilepipe.run(str(shared_file("dicom", "wsi_cmu1")), str(out), model="standin", weights="none")
    return out, summary


def test_scene_levels_are_the_mode_of_level_0_and_georeferenced(scene):
    import rioxarray  # noqa: F401 - registers .rio
    import xarray as xr

    tif, out, summary = scene
    levels = assert_pyramid_is_the_mode(out, summary["model"]["num_classes"], 3)
    assert (levels[0] == 255).any() and (levels[3] == 255).any()
    assert summary["output"]["pyramid_levels"] == [[550, 1300], [275, 650], [138, 325]]
    level = xr.open_zarr(str(out), group="pyramid/2", consolidated=False)["mask"]
    transform = level.rio.transform()
    assert (transform.a, transform.e, transform.c, transform.f) == (120.0, -120.0, 500000.0, 4200000.0)
    assert level.rio.crs.to_epsg() == 32618
    assert float(level.x[0]) == 500000.0 + 60.0
    assert "ome" not in zarr.open_group(str(out), mode="r").attrs  # a scene keeps its CF/CRS conventions


def test_slide_levels_are_the_mode_of_level_0(slide):
    out, summary = slide
    assert_pyramid_is_the_mode(out, summary["model"]["num_classes"], 3)


@pytest.mark.parametrize("which", ["scene", "slide"])
def test_building_the_pyramid_holds_less_than_one_block_row(which, scene, slide):
    out = scene[1] if which == "scene" else slide[0]
    store = MaskStore.open(str(out), mode="r+")
    plan = (scene[2] if which == "scene" else slide[1])["plan"]
    block_row_bytes = plan["chunk_size"] * store.mask.shape[-1]  # a row of blocks: one chunk row across the plane
    levels = sorted(store.group["pyramid"].group_keys())
    before = [store.group[f"pyramid/{n}/mask"][...] for n in levels]
    tracemalloc.start()
    try:
        build_pyramid(store)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < block_row_bytes, f"peak {peak} B >= one block row of level 0 ({block_row_bytes} B)"
    assert all(np.array_equal(b, store.group[f"pyramid/{n}/mask"][...]) for n, b in zip(levels, before))


def _level0_slide_file() -> pydicom.Dataset:
    files = [pydicom.dcmread(p, stop_before_pixels=True) for p in shared_file("dicom", "wsi_cmu1").iterdir()]
    volumes = [ds for ds in files if "VOLUME" in ds.ImageType]
    return max(volumes, key=lambda ds: int(ds.TotalPixelMatrixColumns) * int(ds.TotalPixelMatrixRows))


def test_slide_store_opens_with_ome_zarr_in_micrometres(slide):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    out, _ = slide
    spacing = [float(v) * 1000 for v in  # mm -> um, straight from the header
               _level0_slide_file().SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    node = next(iter(Reader(parse_url(str(out)))()))
    assert any(isinstance(spec, Label) for spec in node.specs)
    assert [d.shape for d in node.data] == [(2967, 2220), (1484, 1110), (742, 555), (371, 278)]
    assert [(a["name"], a["unit"]) for a in node.metadata["axes"]] == [("y", "micrometer"), ("x", "micrometer")]
    for n, transforms in enumerate(node.metadata["coordinateTransformations"]):
        assert transforms[0]["scale"] == pytest.approx([s * 2 ** n for s in spacing])
        if n:  # a level's first pixel is centred on the centres of the 2^n x 2^n level-0 pixels it covers
            centre = np.arange(2 ** n).mean()  # level-0 pixel centres 0, 1, ..., 2^n - 1 along each axis
            assert transforms[1]["translation"] == pytest.approx([s * centre for s in spacing])
    colours = node.metadata["color"]
    assert len(colours) == 5 and colours[255][3] == 0 and colours[1][3] == 1
    assert node.metadata["properties"][255]["class"] == "no data"


def test_dicom_series_store_opens_with_ome_zarr_in_millimetres(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05.image_label import ImageLabel

    series = shared_file("dicom", "series_mr_ge_epi")
    out = tmp_path / "series.zarr"
    tilepipe.run(str(series), str(out), model="standin", weights="none")
    headers = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in series.iterdir()),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))
    steps = np.diff([np.asarray(ds.ImagePositionPatient, float) for ds in headers], axis=0)
    expected = [float(np.median(np.linalg.norm(steps, axis=1))), *map(float, headers[0].PixelSpacing)]
    node = next(iter(Reader(parse_url(str(out)))()))
    assert node.data[0].shape == (15, 64, 64)
    assert [(a["name"], a["type"], a["unit"]) for a in node.metadata["axes"]] == [
        ("z", "space", "millimeter"), ("y", "space", "millimeter"), ("x", "space", "millimeter")]
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx(expected)
    ImageLabel.from_zarr(zarr.open_group(str(out), mode="r"))  # raises unless valid OME-NGFF 0.5


def test_a_resumed_run_completes_the_pyramid(scene, tmp_path, monkeypatch):
    tif, reference, _ = scene
    out = tmp_path / "resumed.zarr"
    original = tilepipe.schedule.process_task

    def failing(ctx, units):  # the task of strip 3 fails before writing anything
        if any(u.strip == 3 for u in units):
            return [BlockReport(index=i, core="", error="simulated failure") for u in units for i in u.block_indices]
        return original(ctx, units)

    monkeypatch.setattr(tilepipe.schedule, "process_task", failing)
    with pytest.raises(tilepipe.TilepipeError, match="blocks failed"):
        tilepipe.run(str(tif), str(out), **SCENE)
    group = zarr.open_group(str(out), mode="r")
    assert "pyramid" not in group and "multiscales" not in group.attrs
    monkeypatch.setattr(tilepipe.schedule, "process_task", original)

    import tilepipe.pyramid as pyramid
    reduce = pyramid._reduce
    calls = []

    def crash_on_level_2(source, target, store):
        calls.append(target.path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        reduce(source, target, store)

    monkeypatch.setattr(pyramid, "_reduce", crash_on_level_2)
    with pytest.raises(tilepipe.TilepipeError, match="disk full .* while writing the pyramid of"):
        tilepipe.run(str(tif), str(out), resume=True, **SCENE)
    assert not tilepipe.open(str(out)).is_complete
    monkeypatch.setattr(pyramid, "_reduce", reduce)

    summary = tilepipe.run(str(tif), str(out), resume=True, **SCENE)
    assert summary["plan"]["blocks_run"] == 0 and tilepipe.open(str(out)).is_complete
    assert_pyramid_is_the_mode(out, summary["model"]["num_classes"], 3)
    stored = zarr.open_group(str(out), mode="r")
    expected = zarr.open_group(str(reference), mode="r")
    for path in ("mask", "pyramid/1/mask", "pyramid/2/mask", "pyramid/3/mask"):
        assert np.array_equal(stored[path][...], expected[path][...])


def test_a_4d_series_keeps_its_volume_and_slice_axes_in_the_pyramid(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = tmp_path / "dwi.zarr"
    summary = tilepipe.run(str(shared_file("dicom", "four_d_dwi")), str(out), model="standin", weights="none")
    levels = assert_pyramid_is_the_mode(out, summary["model"]["num_classes"], 1)
    assert levels[1].shape == (2, 1, 448, 448)  # volumes and slices kept, only y and x halved
    node = next(iter(Reader(parse_url(str(out)))()))
    assert [a["name"] for a in node.metadata["axes"]] == ["volume", "z", "y", "x"]
    spacing = [float(v) for v in pydicom.dcmread(next(shared_file("dicom", "four_d_dwi").iterdir()),
                                                 stop_before_pixels=True).PixelSpacing]
    assert node.metadata["coordinateTransformations"][1][0]["scale"][2:] == pytest.approx([2 * s for s in spacing])
