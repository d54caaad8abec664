"""The command line: bad input gives one clear line and no complete store; config files; plan."""

from __future__ import annotations

import subprocess
import sys
from contextlib import nullcontext

import pytest
import rasterio
import yaml
from click.testing import CliRunner

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tilepipe.cli import main

STANDIN = ["--model", "standin", "--weights", "none"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_clear_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def assert_no_complete_store(out):
    if out.exists():
        with pytest.raises(tilepipe.TilepipeError) if not (out / "zarr.json").exists() else nullcontext():
            assert not tilepipe.open(str(out)).is_complete


def test_missing_file(tmp_path):
    out = tmp_path / "o.zarr"
    assert_one_clear_error(invoke("run", tmp_path / "nope.tif", "-o", out, *STANDIN), "nope.tif", "no such file")
    assert not out.exists()


def test_not_a_raster(tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("not an image")
    out = tmp_path / "o.zarr"
    assert_one_clear_error(invoke("run", bad, "-o", out, *STANDIN), "notes.tif", "not a readable raster")
    assert not out.exists()


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_tiff(tmp_path, keep):
    """Cut early, the directory is gone; cut late, the last strips are: both fail before any output."""
    src = shared_file("geotiff", "rgb_lzw.tif")
    data = src.read_bytes()
    bad = tmp_path / "cut.tif"
    with rasterio.open(src) as ds:  # a copy whose directory sits before the pixel data
        profile = ds.profile
        pixels = ds.read()
    full = tmp_path / "full.tif"
    with rasterio.open(full, "w", **profile) as dst:
        dst.write(pixels)
    data = full.read_bytes()
    bad.write_bytes(data[: int(len(data) * keep)])
    out = tmp_path / "o.zarr"
    result = invoke("run", bad, "-o", out, *STANDIN)
    assert_one_clear_error(result, "cut.tif")
    assert_no_complete_store(out)


def test_band_out_of_range(tmp_path):
    src = shared_file("geotiff", "rmnp-rgb.tif")
    out = tmp_path / "o.zarr"
    assert_one_clear_error(invoke("run", src, "-o", out, "--bands", "4,2,1", *STANDIN), "band 4 is out of range")
    assert not out.exists()


def test_existing_output_needs_overwrite(tmp_path):
    src = write_geotiff(tmp_path / "a.tif", smooth_image(64, 64))
    out = tmp_path / "o.zarr"
    assert invoke("run", src, "-o", out, *STANDIN).exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    assert_one_clear_error(invoke("run", src, "-o", out, *STANDIN), "already exists", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == before and tilepipe.open(str(out)).is_complete
    assert invoke("run", src, "-o", out, *STANDIN, "--overwrite").exit_code == 0


def test_overwrite_never_deletes_something_that_is_not_a_store(tmp_path):
    src = write_geotiff(tmp_path / "a.tif", smooth_image(64, 64))
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("...")
    assert_one_clear_error(invoke("run", src, "-o", precious, *STANDIN, "--overwrite"), "not a tilepipe store")
    assert (precious / "chapter1.tex").exists()


def test_failed_block_leaves_store_incomplete_and_exit_nonzero(tmp_path, monkeypatch):
    """A read error in the middle of a run: the other blocks finish, the summary lists the failure."""
    from tilepipe.sources.geotiff import GeoTiffSource

    src = write_geotiff(tmp_path / "a.tif", smooth_image(256, 256))
    original = GeoTiffSource.read

    def flaky(self, window, plane=None):
        if window.row_stop > 200 and window.col_stop > 200:
            raise tilepipe.TilepipeError(f"{self.path}: cannot read window {window} (simulated bad strip)")
        return original(self, window, plane)

    monkeypatch.setattr(GeoTiffSource, "read", flaky)
    out = tmp_path / "o.zarr"
    result = invoke("run", src, "-o", out, *STANDIN, "--tile-size", "64", "--overlap", "16",
                    "--chunk-size", "128", "--block-size", "128")
    assert_one_clear_error(result, "1 of 4 blocks failed", "simulated bad strip")
    store = tilepipe.open(str(out))
    assert not store.is_complete
    assert store.summary["failed_blocks"][0]["index"] == [1, 1]
    assert store.done_blocks().sum() == 3


def test_config_file_and_flags(tmp_path):
    src = write_geotiff(tmp_path / "a.tif", smooth_image(100, 120))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": "standin", "weights": "none", "tile-size": 64, "overlap": 16}))
    out = tmp_path / "o.zarr"
    assert invoke("run", src, "-o", out, "--config", config, "--overlap", "32").exit_code == 0
    options = tilepipe.open(str(out)).info.options
    assert options["tile_size"] == 64 and options["overlap"] == 32  # the flag wins over the file
    config.write_text("tile_size: 64\nbogus: 1\n")
    assert_one_clear_error(invoke("run", src, "-o", tmp_path / "p.zarr", "--config", config), "c.yaml", "bogus")


def test_plan_is_a_dry_run(tmp_path):
    src = shared_file("geotiff", "RGB.byte.tif")
    result = invoke("plan", src, "--tile-size", "256", "--block-size", "512", "--chunk-size", "256")
    assert result.exit_code == 0, result.output
    assert "overlap cost factor" in result.output and "estimated peak memory" in result.output
    info = tilepipe.plan(str(src), tile_size=256, block_size=512, chunk_size=256)
    # By hand, for the 718 x 791 scene, 256 px tiles, overlap 64 (step 192), output stride 8:
    # rows start at 0, 192, 384 and, snapped to reach row 718, 464; columns at 0, 192, 384, 536.
    # 791 px in strips of at most 512: 2 strips, [0, 512) and [512, 791); 3 chunk rows of 256.
    # Tiles touching strip 0: columns 0, 192, 384; strip 1: 384, 536. So 4 x (3 + 2) = 20 tiles,
    # and 20 x 256^2 px pushed through the network for 718 x 791 px: 1,310,720 / 567,938 = 2.308.
    assert info["blocks"] == 6 and info["lattice_tiles"] == 16 and info["tiles_computed"] == 20
    assert info["overlap_cost_factor"] == 2.308


def test_summary_command_shows_the_saved_summary(tmp_path):
    src = write_geotiff(tmp_path / "a.tif", smooth_image(64, 64))
    out = tmp_path / "o.zarr"
    invoke("run", src, "-o", out, *STANDIN)
    result = invoke("summary", out)
    assert result.exit_code == 0 and "RANDOM WEIGHTS" in result.output.splitlines()[2]
    assert (tmp_path / "o.summary.md").exists() and (tmp_path / "o.summary.json").exists()


JFIF = ("The (0028,0004) 'Photometric Interpretation' value is 'RGB' however the encoded image's codestream "
        "contains a JFIF APP marker which indicates it should be 'YBR_FULL_422'")


@pytest.mark.parametrize("command, silenced", [(None, False), ("catalog", True)], ids=["import", "command"])
def test_only_the_command_silences_pydicoms_jfif_warning(command, silenced):
    """Warning filters are a process-wide choice: the command's, never a side effect of importing
    tilepipe. Under ``-W error`` the warning pydicom gives for each such frame raises unless ignored."""
    code = "\n".join([
        "import warnings",
        "import tilepipe, tilepipe.cli, tilepipe.pipeline, tilepipe.sources.dicom, tilepipe.sources.dicom_pixels",
        f"assert CliRunner().invoke(tilepipe.cli.main, [{command!r}]).exit_code == 0" if command else "",
        f"warnings.warn({JFIF!r})",
    ])
    code = "from click.testing import CliRunner\n" + code
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert (result.returncode == 0) == silenced, result.stderr[-1000:]
    if not silenced:
        assert "JFIF APP marker" in result.stderr
