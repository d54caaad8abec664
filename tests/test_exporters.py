"""Exporters on stand-in runs over real GeoTIFFs: the COG is a valid, georeferenced, paletted copy of
the mask; the PNG preview has the asked size and the class colours; a store the COG cannot place,
or that is missing or unfinished, fails with one ``Error:`` line and leaves no file behind."""

import shutil
from pathlib import Path

import numpy as np
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
