"""GeoTIFF inputs: layouts, band selection, data types and their scaling."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tilepipe.sources import SourceSpec, open_source
from tilepipe.sources.scaling import ScalingRequest

STANDIN = dict(model="standin", weights="none", tile_size=256, overlap=64, chunk_size=256, block_size=512)


def mask(out) -> np.ndarray:
    return zarr.open_group(str(out), mode="r")["mask"][...]


def test_striped_raw_and_tiled_lzw_copies_of_a_scene_give_the_same_mask(tmp_path):
    """RGB.byte.tif (striped, uncompressed) and rgb_lzw.tif (256 px tiles, LZW) hold the same pixels."""
    striped, tiled = shared_file("geotiff", "RGB.byte.tif"), shared_file("geotiff", "rgb_lzw.tif")
    with rasterio.open(striped) as a, rasterio.open(tiled) as b:
        assert np.array_equal(a.read(), b.read())
    tilepipe.run(str(striped), str(tmp_path / "a.zarr"), **STANDIN)
    tilepipe.run(str(tiled), str(tmp_path / "b.zarr"), **STANDIN)
    assert np.array_equal(mask(tmp_path / "a.zarr"), mask(tmp_path / "b.zarr"))


def test_band_order_is_honoured(tmp_path):
    data = smooth_image(128, 160, bands=3, seed=5)
    path = write_geotiff(tmp_path / "rgb.tif", data)
    reversed_path = write_geotiff(tmp_path / "bgr.tif", data[::-1].copy())
    tilepipe.run(str(path), str(tmp_path / "a.zarr"), **STANDIN)
    tilepipe.run(str(reversed_path), str(tmp_path / "b.zarr"), bands=(3, 2, 1), **STANDIN)
    assert np.array_equal(mask(tmp_path / "a.zarr"), mask(tmp_path / "b.zarr"))


def test_one_band_is_replicated_to_three_channels(tmp_path):
    gray = smooth_image(96, 96, bands=1, seed=2)
    one = write_geotiff(tmp_path / "gray.tif", gray)
    three = write_geotiff(tmp_path / "gray3.tif", np.repeat(gray, 3, axis=0))
    tilepipe.run(str(one), str(tmp_path / "a.zarr"), **STANDIN)
    tilepipe.run(str(three), str(tmp_path / "b.zarr"), **STANDIN)
    assert np.array_equal(mask(tmp_path / "a.zarr"), mask(tmp_path / "b.zarr"))


def test_float_input_uses_percentiles_from_a_sample_and_says_so(tmp_path):
    data = smooth_image(300, 300, dtype=np.uint16).astype(np.float32) / 7.5 - 100.0
    path = write_geotiff(tmp_path / "f.tif", data)
    source = open_source(SourceSpec(path=str(path)))
    assert source.scaling.method == "percentile 2-98"
    # from a sample of windows, not the whole raster: near, not equal to, the full 2nd percentile
    assert np.percentile(data[0], 0.5) <= source.scaling.low[0] <= np.percentile(data[0], 5)
    assert np.percentile(data[0], 95) <= source.scaling.high[0] <= np.percentile(data[0], 99.5)
    assert "windows" in source.scaling.sample
    fixed = open_source(SourceSpec(path=str(path), scaling=ScalingRequest.parse("-100,400")))
    assert (fixed.scaling.low, fixed.scaling.high) == ((-100.0,) * 3, (400.0,) * 3)
    summary = tilepipe.run(str(path), str(tmp_path / "f.zarr"), **STANDIN)
    assert summary["input"]["scaling"]["method"] == "percentile 2-98"


def test_dtype_scaling_rejects_floats_and_bad_requests(tmp_path):
    path = write_geotiff(tmp_path / "f.tif", np.zeros((3, 32, 32), np.float32))
    with pytest.raises(tilepipe.TilepipeError, match="needs an integer image"):
        open_source(SourceSpec(path=str(path), scaling=ScalingRequest.parse("dtype")))
    with pytest.raises(tilepipe.TilepipeError, match="HIGH must be greater"):
        ScalingRequest.parse("5,1")
    with pytest.raises(tilepipe.TilepipeError, match="two numbers"):
        ScalingRequest.parse("bright")


def test_internal_mask_marks_nodata(tmp_path):
    """cogeo.tif carries a GDAL internal mask: masked pixels are 255 in the output."""
    path = shared_file("geotiff", "cogeo.tif")
    tilepipe.run(str(path), str(tmp_path / "c.zarr"), **STANDIN)
    with rasterio.open(path) as src:
        valid = src.dataset_mask() > 0
    out = mask(tmp_path / "c.zarr")
    assert ((out == 255) == ~valid).all()
