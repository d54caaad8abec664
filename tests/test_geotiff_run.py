"""End to end on the five real GeoTIFFs: shapes, georeferencing, no-data and the summary's input facts.

The stand-in model keeps these about reading and bookkeeping; the real network's run on a GeoTIFF
is :mod:`tests.test_smoke`'s."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr

import tilepipe
from tests.conftest import shared_file
from tilepipe.sources.geotiff import GeoTiffSource

NAMES = ["RGB.byte.tif", "cogeo.tif", "rgb_lzw.tif", "rmnp-rgb.tif",
         "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF"]


def before_each_read(monkeypatch, call) -> None:
    """Have ``call(window)`` run before every :meth:`GeoTiffSource.read`, in whichever thread reads."""
    original = GeoTiffSource.read

    def spy(self, window, plane=None):
        call(window)
        return original(self, window, plane)

    monkeypatch.setattr(GeoTiffSource, "read", spy)


@pytest.mark.parametrize("name", NAMES)
def test_real_geotiff_end_to_end(name, tmp_path):
    path = shared_file("geotiff", name)
    out = tmp_path / "mask.zarr"
    summary = tilepipe.run(str(path), str(out), model="standin", weights="none", workers=1)
    group = zarr.open_group(str(out), mode="r")
    mask = group["mask"][...]
    with rasterio.open(path) as src:
        assert mask.shape == (src.height, src.width)
        assert group.attrs["crs_wkt"] == src.crs.to_wkt()
        assert group.attrs["epsg"] == src.crs.to_epsg()
        assert group.attrs["transform"] == pytest.approx(list(src.transform)[:6])
        valid = src.dataset_mask() > 0
    assert (mask[~valid] == 255).all()
    assert (mask[valid] < summary["model"]["num_classes"]).all()
    assert tilepipe.open(str(out)).is_complete
    assert summary["warnings"][0].startswith("RANDOM WEIGHTS")
    if name == "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF":
        assert summary["input"]["scaling"]["method"].startswith("percentile")  # uint16: statistics, not 0..65535
        assert "windows" in summary["input"]["scaling"]["sample"]  # no overviews: sampled, not a full read
    if name == "cogeo.tif":
        assert summary["input"]["overviews"] == [2, 4, 8, 16, 32, 64]


def test_rgb_byte_has_nodata_corners_written_as_255(tmp_path):
    path = shared_file("geotiff", "RGB.byte.tif")
    out = tmp_path / "m.zarr"
    tilepipe.run(str(path), str(out), model="standin", weights="none", tile_size=256, chunk_size=256, block_size=256)
    mask = zarr.open_group(str(out))["mask"][...]
    with rasterio.open(path) as src:
        valid = src.dataset_mask() > 0
    assert (~valid).sum() > 10000
    assert ((mask == 255) == ~valid).all()


def test_all_nodata_blocks_skip_the_model(tmp_tif, tmp_path):
    from tests.conftest import smooth_image

    data = smooth_image(512, 768)
    data[:, :, 256:] = 0  # right two thirds: nodata
    path = tmp_tif(data=data, nodata=0)
    summary = tilepipe.run(str(path), str(tmp_path / "m.zarr"), model="standin", weights="none", tile_size=128,
                           overlap=32, chunk_size=256, block_size=256)
    assert summary["plan"]["blocks"] == 6 and summary["plan"]["blocks_no_data"] == 4
    mask = zarr.open_group(str(tmp_path / "m.zarr"))["mask"][...]
    assert (mask[:, 256:] == 255).all() and (mask[:, :256] != 255).all()
    assert summary["plan"]["tiles_skipped_no_data"] > 0


def test_reads_are_windows_never_the_whole_raster(tmp_tif, tmp_path, monkeypatch):
    """Every read is one block plus its halo; the statistics sample is small windows."""
    from tests.conftest import smooth_image

    path = tmp_tif(data=smooth_image(900, 1100, dtype=np.uint16))  # uint16: percentile statistics
    reads = []
    before_each_read(monkeypatch, reads.append)
    tilepipe.run(str(path), str(tmp_path / "m.zarr"), model="standin", weights="none", tile_size=128,
                 overlap=32, chunk_size=256, block_size=256)
    largest = max(w.area for w in reads)
    assert largest <= (256 + 2 * 128) ** 2 < 900 * 1100 / 2
    assert len(reads) >= 20  # 16 statistics windows and one read per block (4 x 5 blocks)


def test_a_40000_pixel_scene_plans_from_a_few_small_windows(tmp_path, monkeypatch):
    """A sparse 40,000 x 40,000 GeoTIFF (no pixel written): opening, statistics and the dry run
    read a few small windows only (counted, not timed), and the plan's figures follow from
    geometry alone."""
    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40000, height=40000, count=3, dtype="uint16",
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True,
                       crs="EPSG:32618", transform=rasterio.transform.from_origin(0, 0, 10, 10)):
        pass
    reads = []
    before_each_read(monkeypatch, reads.append)
    info = tilepipe.plan(str(path), model="standin", weights="none")
    assert reads and max(w.area for w in reads) <= 256 * 256  # the statistics windows, nothing larger
    assert sum(w.area for w in reads) <= 16 * 256 * 256  # a 4 x 4 grid of them: 0.07% of the scene
    assert info["blocks"] == 79 * 5 and info["tile"] == [512, 512]  # 79 chunk rows x 5 strips of 8192 px
    assert info["tiles_computed"] <= 1.05 * info["lattice_tiles"]
    assert info["estimated_peak_memory_mb"] < 2048


def test_gdal_cache_is_64_mb_while_the_blocks_read_and_restored_after(tmp_tif, tmp_path, monkeypatch):
    """GDAL's block cache is process-wide: bounded for the run (as seen from the reader threads,
    in bytes, the unit rasterio takes) and given back to the caller's setting when it ends."""
    from rasterio.env import get_gdal_config

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = get_gdal_config("GDAL_CACHEMAX")
    seen = set()
    before_each_read(monkeypatch, lambda window: seen.add(get_gdal_config("GDAL_CACHEMAX")))
    tilepipe.run(str(tmp_tif()), str(tmp_path / "m.zarr"), model="standin", weights="none", tile_size=64,
                 overlap=16, chunk_size=128, block_size=128, workers=2)
    assert seen == {64 * 1024 * 1024}
    assert get_gdal_config("GDAL_CACHEMAX") == before


def test_the_statistics_sample_never_reads_a_big_overview_whole(tmp_path, monkeypatch):
    """A 4,608 px square uint16 scene with only a 2x overview (2,304 px square, 5.3 Mpx): the
    percentile sample must not read that overview whole. Every array read while the source opens
    is recorded, whatever reads it (a window, a resampled read, a mask)."""
    from rasterio.enums import Resampling
    from rasterio.io import DatasetReader
    from rasterio.transform import from_origin

    from tilepipe.sources import SourceSpec
    from tilepipe.sources.geotiff import SAMPLE_MAX_PIXELS

    side = 4608
    ramp = np.add.outer(np.arange(side, dtype=np.uint16), np.arange(side, dtype=np.uint16))[None]
    path = tmp_path / "big.tif"
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint16", tiled=True,
                       compress="deflate", blockxsize=512, blockysize=512, crs="EPSG:32618",
                       transform=from_origin(500000.0, 4200000.0, 30.0, 30.0)) as dst:
        dst.write(ramp)
        dst.build_overviews([2], Resampling.nearest)
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2]
    shapes = []
    for method in ("read", "read_masks"):
        original = getattr(DatasetReader, method)

        def spy(self, *args, _original=original, **kwargs):
            out = _original(self, *args, **kwargs)
            shapes.append(out.shape)
            return out

        monkeypatch.setattr(DatasetReader, method, spy)
    source = GeoTiffSource(SourceSpec(path=str(path)))
    assert source.scaling.method.startswith("percentile")
    largest = max(int(np.prod(s[-2:])) for s in shapes)
    assert largest <= SAMPLE_MAX_PIXELS < (side // 2) ** 2
