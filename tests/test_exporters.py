"""Exporters on stand-in runs over real GeoTIFFs: the COG is a valid, georeferenced, paletted copy of
the mask; the PNG preview has the asked size and the class colours, and its overlay blends them over
the input (a DICOM series' windowed middle slice and a slide's small level too, read here with
pydicom); a store the COG cannot place, or that is missing or unfinished, fails with one ``Error:``
line and leaves no file behind."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import rasterio
import zarr
from click.testing import CliRunner
from PIL import Image
from rasterio.enums import Compression
from rasterio.errors import RasterioError
from rio_cogeo.cogeo import cog_validate

import tilepipe
from tests.conftest import shared_file
from tests.dicom_helpers import dicom_data
from tilepipe.cli import main
from tilepipe.errors import TilepipeError
from tilepipe.exporters import cog, export
from tilepipe.exporters.colors import ALPHA, PALETTE
from tilepipe.grid import TileGrid
from tilepipe.partition import Plan
from tilepipe.sink import MaskStore

SCENES = {"rgb": "RGB.byte.tif", "landsat": "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF"}
# Small chunks and blocks, so a store spans several of each and the exporters' chunk-row and
# 512-tile reads do not line up with the store's chunks.
RUN = dict(model="standin", weights="none", tile_size=256, overlap=32, chunk_size=256, block_size=512)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """``stores(scene) -> (input, store)``: one stand-in run per scene, shared by this module."""
    made = {}

    def get(scene):
        if scene not in made:
            source = shared_file("geotiff", SCENES[scene])
            store = tmp_path_factory.mktemp(scene) / "mask.zarr"
            tilepipe.run(str(source), str(store), **RUN)
            made[scene] = source, store
        return made[scene]

    return get


def read_mask(store) -> np.ndarray:
    return zarr.open_group(str(store), mode="r")["mask"][...]


@pytest.mark.parametrize("scene", SCENES)
def test_cog_is_a_valid_georeferenced_copy_of_the_mask(stores, scene, tmp_path):
    source, store = stores(scene)
    out = export(str(store), "cog", str(tmp_path / "mask.tif"))
    valid, errors, _ = cog_validate(out)
    assert valid and not errors
    mask = read_mask(store)
    assert (mask != 255).any()
    names = zarr.open_group(str(store), mode="r").attrs["class_names"]
    with rasterio.open(source) as ref, rasterio.open(out) as tif:
        assert tif.crs == ref.crs
        assert tif.transform == ref.transform
        assert tif.nodata == 255
        assert tif.profile["tiled"] and tif.block_shapes == [(512, 512)]
        assert tif.compression == Compression.deflate
        assert tif.overviews(1)
        np.testing.assert_array_equal(tif.read(1), mask)
        overview = tif.read(1, out_shape=(tif.height // 2, tif.width // 2))
        assert set(np.unique(overview)) <= set(np.unique(mask)), "mode resampling invents no label"
        colours = tif.colormap(1)
        assert colours[1] == (*PALETTE[1].tolist(), 255) and colours[255][3] == 0
        assert tif.tags(1) == {f"CLASS_{v}": name for v, name in enumerate(names)}
        assert tif.descriptions == ("class label",)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.tif"], "no temporary file left beside OUT"


def test_cog_failure_leaves_no_file(stores, tmp_path, monkeypatch):
    _, store = stores("rgb")

    def disk_full(src, dst, **options):
        Path(dst).write_bytes(b"II*\x00 half a TIFF")
        raise RasterioError("No space left on device")

    monkeypatch.setattr(cog, "copy", disk_full)
    with pytest.raises(TilepipeError, match="cannot write the COG"):
        export(str(store), "cog", str(tmp_path / "mask.tif"))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def stack(tmp_path) -> str:
    """A finished 3-slice (z, y, x) store without georeferencing, as a DICOM series gives: the
    middle slice is all class 2, the others class 1."""
    plan = Plan(200, 300, TileGrid(64, 8, 1), chunk_size=64, block_size=128, depth=3)
    url = str(tmp_path / "stack.zarr")
    store = MaskStore.create(url, plan, 3, False, attrs={"crs_wkt": None, "class_names": ["a", "b", "c"]})
    store.mask[...] = 1
    store.mask[1] = 2
    store.mark_complete()
    return url


def test_cog_of_a_store_without_crs_is_refused(stack, tmp_path):
    with pytest.raises(TilepipeError, match="no georeferencing; use --to dicom-seg or png"):
        export(stack, "cog", str(tmp_path / "stack.tif"))
    assert not (tmp_path / "stack.tif").exists()


def assert_matches_but_legend(png: np.ndarray, expected: np.ndarray) -> None:
    """Every pixel that differs lies in one small box in the top-left corner: the legend."""
    rows, cols = np.nonzero((png != expected).any(axis=2))
    assert rows.size, "no legend drawn"
    assert rows.min() == 0 and cols.min() == 0
    assert rows.max() < png.shape[0] / 2 and cols.max() < png.shape[1] / 2, "differs outside the legend"


def test_png_preview_has_the_size_and_the_class_colours(stores, tmp_path):
    _, store = stores("rgb")
    out = tmp_path / "preview.png"
    result = CliRunner().invoke(main, ["export", str(store), str(out), "--to", "png", "--max-size", "300"])
    assert result.exit_code == 0, result.output
    mask = read_mask(store)
    with Image.open(out) as image:
        width, height = image.size
        png = np.asarray(image.convert("RGBA"))
    assert mask.shape == (718, 791) and (width, height) == (300, 272)  # 718 x 300 / 791 = 272.3 rows
    labels = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
    expected = np.dstack([PALETTE[labels], ALPHA[labels]])
    assert_matches_but_legend(png, expected)

    with_overlay = export(str(store), "png", str(tmp_path / "overlay.png"), max_size=300, overlay=True)
    with Image.open(with_overlay) as image:
        assert image.size == (width, height)
        assert not np.array_equal(np.asarray(image.convert("RGB")), png[..., :3])


def test_png_of_a_stack_shows_the_middle_slice(stack, tmp_path):
    out = export(stack, "png", str(tmp_path / "stack.png"), max_size=150)
    with Image.open(out) as image:
        png = np.asarray(image.convert("RGBA"))
    assert png.shape == (100, 150, 4)
    assert_matches_but_legend(png, np.broadcast_to([*PALETTE[2].tolist(), 255], png.shape).astype(np.uint8))


@pytest.mark.parametrize("problem", ["missing", "unfinished"])
def test_export_of_a_bad_store_is_one_error_line(stores, problem, tmp_path):
    if problem == "missing":
        store = tmp_path / "nothing.zarr"
    else:
        store = tmp_path / "unfinished.zarr"
        shutil.copytree(stores("rgb")[1], store)
        group = zarr.open_group(str(store), mode="r+")
        group.attrs["tilepipe"] = {**group.attrs["tilepipe"], "complete": False}
    out = tmp_path / "mask.tif"
    result = CliRunner().invoke(main, ["export", str(store), str(out), "--to", "cog"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert not out.exists()


def assert_close_but_legend(png: np.ndarray, expected: np.ndarray, tolerance: int = 1) -> None:
    """As :func:`assert_matches_but_legend`, allowing ``tolerance`` per channel for rounding."""
    far = (np.abs(png.astype(int) - expected.astype(int)) > tolerance).any(axis=2)
    rows, cols = np.nonzero(far)
    assert rows.size, "no legend drawn"
    assert rows.max() < png.shape[0] / 2 and cols.max() < png.shape[1] / 2, "differs outside the legend"


def blended(grey_or_rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each class's colour half-and-half over the picture, the picture alone where there is no class."""
    picture = np.broadcast_to(grey_or_rgb[..., None] if grey_or_rgb.ndim == 2 else grey_or_rgb, (*labels.shape, 3))
    mixed = (picture + PALETTE[labels].astype(float)) / 2
    return np.where((labels != 255)[..., None], mixed, picture).round()


def test_png_overlay_of_a_dicom_series_blends_the_windowed_middle_slice(tmp_path):
    folder = dicom_data("series_mr_ge_epi")
    tilepipe.run(str(folder), str(tmp_path / "mask.zarr"), model="standin", weights="none")
    out = export(str(tmp_path / "mask.zarr"), "png", str(tmp_path / "overlay.png"), overlay=True)
    with Image.open(out) as image:
        png = np.asarray(image.convert("RGB"))
    headers = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    normal = np.cross(*np.reshape(np.asarray(headers[0].ImageOrientationPatient, float), (2, 3)))
    middle = sorted(headers, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))[7]
    values = middle.pixel_array * float(middle.get("RescaleSlope", 1)) + float(middle.get("RescaleIntercept", 0))
    center = np.median([float(ds.WindowCenter) for ds in headers])
    width = np.median([float(ds.WindowWidth) for ds in headers])
    grey = np.clip((values - (center - width / 2)) / width, 0, 1) * 255
    mask = tilepipe.open(tmp_path / "mask.zarr").mask[7]
    assert png.shape == (768, 768, 3)  # 64 px enlarged 12 times, as legible as the legend needs
    assert_close_but_legend(png, np.kron(blended(grey, mask), np.ones((12, 12, 1))))
    assert len(np.unique(grey)) > 50  # a picture under the classes, not a flat window


def test_png_overlay_of_a_slide_reads_a_level_that_fits(tmp_path):
    folder = dicom_data("wsi_cmu1")
    tilepipe.run(str(folder), str(tmp_path / "mask.zarr"), level=2, model="standin", weights="none")
    out = export(str(tmp_path / "mask.zarr"), "png", str(tmp_path / "overlay.png"), max_size=300, overlay=True)
    with Image.open(out) as image:
        png = np.asarray(image.convert("RGB"))
    mask = tilepipe.open(tmp_path / "mask.zarr").mask[...]
    level3 = pydicom.dcmread(folder / "level-3-frames-0-1.dcm")  # 370 x 277 px: the smallest level of 300 px or more
    assert (level3.TotalPixelMatrixRows, level3.NumberOfFrames) == (370, 1)
    size = (225, 300)  # 555 x 300 / 741 = 224.7
    picture = np.asarray(Image.fromarray(level3.pixel_array).resize(size, Image.NEAREST), float)
    labels = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    assert png.shape == (300, 225, 3)
    assert_close_but_legend(png, blended(picture, labels), tolerance=2)
