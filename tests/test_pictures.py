"""The pictures: ``plan --preview``, the run's timeline and the small-image PNG export.

Each picture is checked for its size, for not being blank, and for marks where the plan puts them
(block-grid lines read pixel by pixel at ``block_size * scale``); the thumbnail never reads the
input whole (stand-in model: these tests are about drawing, not the network)."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tilepipe.cli import main
from tilepipe.exporters import export
from tilepipe.report import preview
from tilepipe.sources import SourceSpec
from tilepipe.sources.geotiff import GeoTiffSource

RUN = dict(model="standin", weights="none", tile_size=128, overlap=32, chunk_size=128, block_size=256)
PLAN_FLAGS = ["--model", "standin", "--weights", "none", "--tile-size", "128", "--overlap", "32",
              "--chunk-size", "128", "--block-size", "256"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """1000 x 1200 px, its last 200 columns no-data: strip 4 (cols 1024-1200) is all no-data."""
    data = smooth_image(1000, 1200, seed=5)
    data[:, :, 1000:] = 0
    return write_geotiff(tmp_path_factory.mktemp("pictures") / "scene.tif", data, nodata=0)


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_plan_preview_draws_the_block_grid_on_the_lines(scene, tmp_path, monkeypatch):
    rows_read = []
    read = GeoTiffSource.read

    def counting(self, window, plane=None):
        rows_read.append(window.height)
        return read(self, window, plane)

    monkeypatch.setattr(GeoTiffSource, "read", counting)
    out = tmp_path / "plan.png"
    result = CliRunner().invoke(main, ["plan", str(scene), *PLAN_FLAGS, "--preview", str(out), "--preview-size", "1200"])
    assert result.exit_code == 0, result.output
    assert f"preview {out}" in result.output
    picture = pixels(out)
    assert picture.shape[1] == 1200 and picture.shape[0] > 1000  # the image at scale 1, the legend below it
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 100, "blank picture"
    red, orange = np.array(preview.BLOCK_COLOUR), np.array(preview.UNIT_COLOUR)
    # 1200 px in strips of at most 256 px: 5 strips of 256 (whole 128 px chunks), one chunk row per block
    for x in (256, 512, 768, 1024):  # strip edges: the units' (tasks') outlines, on both sides of the edge
        assert (picture[700, x - 1] == orange).all() and (picture[700, x] == orange).all(), x
    for y in range(128, 1000, 128):  # chunk rows: the block grid, inside strip 0, away from the example tiles
        assert (picture[y - 1, 100] == red).all() and (picture[y, 100] == red).all(), y
    assert not (picture[64, 128] == red).all() and not (picture[64, 128] == orange).all()  # a block's inside
    nodata = picture[300, 1100]  # strip 4 (cols 1024-1200) has no data: hatched grey (and crossed out)
    assert nodata[0] == nodata[1] == nodata[2]
    assert rows_read and set(rows_read) == {1} and len(rows_read) <= 1000  # one source row per picture row


def test_plan_preview_of_a_cog_reads_its_overviews_and_a_slide_its_small_level(tmp_path, monkeypatch):
    from tilepipe.sources.dicom import DicomSource

    calls = []
    monkeypatch.setattr(GeoTiffSource, "read", lambda *a, **k: calls.append(a) or pytest.fail("full-resolution read"))
    info = tilepipe.plan(str(shared_file("geotiff", "cogeo.tif")), preview=str(tmp_path / "cog.png"),
                         preview_size=300, model="standin", weights="none")
    assert pixels(info["preview"]).shape[1] == 300
    monkeypatch.undo()

    levels = []
    read = DicomSource.read
    monkeypatch.setattr(DicomSource, "read", lambda self, w, p=None: levels.append(self.spec.level) or read(self, w, p))
    info = tilepipe.plan(str(shared_file("dicom", "wsi_cmu1")), preview=str(tmp_path / "slide.png"),
                         preview_size=400, model="standin", weights="none")
    picture = pixels(info["preview"])
    assert picture.shape[0] > 400 and picture.shape[1] == 299  # 2967 x 2220 px at 400 px tall: 2220 x 400 / 2967 = 299.3
    assert levels and 0 not in levels  # a smaller pyramid level, never level 0


def test_a_thumbnail_from_overviews_marks_nan_as_no_data_as_the_run_does(tmp_path):
    """The left half is NaN: read from overviews or row by row, the thumbnail calls it no-data."""
    import rasterio

    data = smooth_image(512, 512, bands=1, dtype=np.float32)
    data[:, :, :256] = np.nan
    tif = write_geotiff(tmp_path / "half_nan.tif", data, tiled=True)
    with rasterio.open(tif, "r+") as ds:
        ds.build_overviews([2, 4])
    source = GeoTiffSource(SourceSpec(path=str(tif)))
    rgb, valid = preview.thumbnail(source, (64, 64), None)
    assert not valid[:, :32].any() and valid[:, 32:].all()


def test_a_small_image_is_enlarged_in_the_preview(tmp_path):
    tif = write_geotiff(tmp_path / "small.tif", smooth_image(40, 60, seed=1))
    info = tilepipe.plan(str(tif), preview=str(tmp_path / "small.png"), preview_size=600, **RUN)
    assert pixels(info["preview"]).shape[1] == 600


def test_every_run_writes_a_timeline_the_summary_links(scene, tmp_path):
    out = tmp_path / "run.zarr"
    summary = tilepipe.run(str(scene), str(out), workers=2, **RUN)
    timeline = tmp_path / "run.timeline.png"
    assert summary["output"]["timeline"] == str(timeline)
    assert "[run.timeline.png](run.timeline.png)" in (tmp_path / "run.summary.md").read_text()
    picture = pixels(timeline)
    assert picture.shape == (700, 1200, 3)
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 20, "blank picture"
    from tilepipe.report.timeline import STAGE_COLOURS

    forward = np.array(Image.new("RGB", (1, 1), STAGE_COLOURS["forward"]).getpixel((0, 0)))
    assert (picture == forward).all(axis=-1).sum() > 500  # forward time drawn in the block bars


def test_without_matplotlib_the_run_says_so_and_skips_the_picture(scene, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    logging.getLogger("tilepipe").propagate = True
    with caplog.at_level(logging.WARNING, logger="tilepipe"):
        summary = tilepipe.run(str(scene), str(tmp_path / "bare.zarr"), **RUN)
    assert "matplotlib is not installed" in caplog.text
    assert summary["output"]["timeline"] is None and "matplotlib" in summary["output"]["timeline_note"]
    assert not (tmp_path / "bare.timeline.png").exists()
    assert "matplotlib is not installed" in (tmp_path / "bare.summary.md").read_text()
    assert json.loads((tmp_path / "bare.summary.json").read_text())["status"] == "complete"


def test_png_export_of_a_small_mask_is_enlarged_so_the_legend_leaves_the_picture(tmp_path):
    tif = write_geotiff(tmp_path / "tiny.tif", smooth_image(48, 64, seed=2))
    store = tmp_path / "tiny.zarr"
    tilepipe.run(str(tif), str(store), **RUN)
    picture = pixels(export(str(store), "png", str(tmp_path / "tiny.png")))
    assert picture.shape[:2] == (48 * 12, 64 * 12)  # a whole factor: 64 px -> 768 px
    assert (picture[::12, ::12] == picture[5::12, 5::12]).all(axis=-1).mean() > 0.7  # squares of 12 x 12
    white = (picture == 255).all(axis=-1)
    rows, cols = np.nonzero(white)
    assert (rows.max() + 1) * (cols.max() + 1) < 0.25 * white.size, "the legend covers too much of the picture"
