"""Non-finite pixels (NaN, +-Inf) are no-data: they never spread into their tile's predictions.

The oracle for the stand-in model is independent of the pipeline: a run on the same image
without NaN, with fixed scaling (so both runs scale alike), must give the same labels everywhere
except where a NaN pixel lies within the stand-in's receptive radius (its output at a pixel only
sees the 5x5 neighbourhood, and every other pixel of every tile is identical in both runs).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import zarr
from scipy import ndimage

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tilepipe.engine import Engine, EngineOptions
from tilepipe.errors import TilepipeError
from tilepipe.model import ModelSpec, load_model
from tilepipe.sources import SourceSpec, open_source
from tilepipe.sources.scaling import IntensityScaling, ScalingRequest, resolve_scaling

SCALING = "0,4000"  # smooth_image's float range: fixed, so the NaN run scales like the clean one
STANDIN = dict(model="standin", weights="none", tile_size=64, overlap=16, chunk_size=64, block_size=128,
               workers=1, scaling=SCALING)


def scattered_nan(shape: tuple[int, int], count: int, seed: int = 1) -> np.ndarray:
    """``count`` random NaN positions (a few may touch: the oracle dilates each one)."""
    rng = np.random.default_rng(seed)
    where = np.zeros(shape, bool)
    where[rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)] = True
    return where


def run_mask(path, out, **options) -> tuple[np.ndarray, dict]:
    summary = tilepipe.run(str(path), str(out), **options)
    return zarr.open_group(str(out), mode="r")["mask"][...], summary


@pytest.fixture
def clean_and_nan():
    """A 3-band float32 image, and the same image with a few NaN pixels in every band."""
    clean = smooth_image(192, 256, dtype=np.float32)
    nan = scattered_nan(clean.shape[1:], 12)
    dirty = clean.copy()
    dirty[:, nan] = np.nan
    return clean, dirty, nan


@pytest.mark.parametrize("nodata", [None, float("nan")], ids=["no-nodata-tag", "nodata-nan"])
def test_scattered_nan_changes_only_its_receptive_field_with_the_standin(clean_and_nan, tmp_path, nodata):
    clean, dirty, nan = clean_and_nan
    reference, _ = run_mask(write_geotiff(tmp_path / "clean.tif", clean), tmp_path / "clean.zarr", **STANDIN)
    mask, summary = run_mask(write_geotiff(tmp_path / "nan.tif", dirty, nodata=nodata), tmp_path / "nan.zarr",
                             **STANDIN)
    reach = ndimage.binary_dilation(nan, structure=np.ones((5, 5), bool))  # two 3x3 convolutions: 2 px each way
    assert (mask[nan] == 255).all()
    assert (mask[~nan] != 255).all()
    np.testing.assert_array_equal(mask[~reach], reference[~reach])
    assert tilepipe.open(str(tmp_path / "nan.zarr")).is_complete and summary["status"] == "complete"


def test_infinities_are_no_data_too(tmp_path):
    data = smooth_image(96, 128, dtype=np.float32)
    data[0, 10, 20], data[1, 50, 60], data[2, 70, 5] = np.inf, -np.inf, np.nan
    mask, _ = run_mask(write_geotiff(tmp_path / "inf.tif", data), tmp_path / "inf.zarr", **STANDIN)
    bad = ~np.isfinite(data).all(axis=0)
    assert ((mask == 255) == bad).all()


@pytest.mark.real_model
@pytest.mark.parametrize("nodata", [None, float("nan")], ids=["no-nodata-tag", "nodata-nan"])
def test_scattered_nan_leaves_the_real_model_mask_almost_unchanged(tmp_path, nodata):
    """DeepLabV3's image-pooling branch sees the whole tile: before the fix one NaN made the whole
    tile NaN (class 0 everywhere). Zero-filled NaN pixels shift that average only slightly."""
    clean = smooth_image(128, 128, dtype=np.float32)
    nan = scattered_nan(clean.shape[1:], 6)
    dirty = clean.copy()
    dirty[:, nan] = np.nan
    real = dict(model="deeplabv3_resnet101", weights="none", workers=1, scaling=SCALING, tile_size=128)
    reference, _ = run_mask(write_geotiff(tmp_path / "clean.tif", clean), tmp_path / "clean.zarr", **real)
    mask, _ = run_mask(write_geotiff(tmp_path / "nan.tif", dirty, nodata=nodata), tmp_path / "nan.zarr", **real)
    assert (mask[nan] == 255).all()
    assert (mask == reference).mean() >= 0.99


@pytest.mark.parametrize("nodata", [None, float("nan")], ids=["no-nodata-tag", "nodata-nan"])
def test_an_all_nan_image_completes_as_all_no_data(tmp_path, nodata):
    data = np.full((3, 96, 128), np.nan, np.float32)
    out = tmp_path / "allnan.zarr"
    mask, summary = run_mask(write_geotiff(tmp_path / "allnan.tif", data, nodata=nodata), out, **STANDIN)
    assert (mask == 255).all()
    assert tilepipe.open(str(out)).is_complete
    assert summary["status"] == "complete"
    assert any("no-data" in w and "every pixel" in w for w in summary["warnings"])
    assert "every pixel" in summary.to_markdown()


def test_an_all_nan_image_with_statistics_scaling_completes_after_a_whole_scan(tmp_path):
    """Percentiles of nothing do not exist, but nothing needs scaling either: once a scan of every
    pixel found none valid, the run completes as all no-data and says where it looked."""
    path = write_geotiff(tmp_path / "allnan.tif", np.full((1, 64, 64), np.nan, np.float32))
    mask, summary = run_mask(path, tmp_path / "allnan.zarr", model="standin", weights="none", workers=1)
    assert (mask == 255).all() and summary["status"] == "complete"
    assert "whole image" in summary["input"]["scaling"]["sample"]
    assert any("ALL NO-DATA" in w for w in summary["warnings"])


def test_valid_pixels_the_quick_sample_misses_are_found_by_the_scan(tmp_path):
    """A scene that is NaN but for one 20 x 20 patch between the 4 x 4 sample windows: the
    statistics come from that patch (values 100..199), not from a guess."""
    data = np.full((1, 2048, 2048), np.nan, np.float32)
    data[0, 500:520, 500:520] = 100 + np.arange(400, dtype=np.float32).reshape(20, 20) / 4
    path = write_geotiff(tmp_path / "patch.tif", data)
    scaling = open_source(SourceSpec(path=str(path))).scaling
    assert scaling.method.startswith("percentile") and "whole image" in scaling.sample
    assert 100 <= scaling.low[0] < scaling.high[0] <= 200


def test_the_scan_reads_bounded_windows_however_wide_the_image(tmp_path, monkeypatch):
    """Memory stays flat during a scan: no read is wider than SCAN_COLS (here 512 of 2048 px),
    and a patch straddling two windows (columns 500-519) is still found."""
    from tilepipe.sources import geotiff

    monkeypatch.setattr(geotiff, "SCAN_COLS", 512)
    data = np.full((1, 2048, 2048), np.nan, np.float32)
    data[0, 500:520, 500:520] = 100 + np.arange(400, dtype=np.float32).reshape(20, 20) / 4
    widths = []
    read = geotiff.GeoTiffSource.read
    monkeypatch.setattr(geotiff.GeoTiffSource, "read", lambda self, window: widths.append(window.width) or read(self, window))
    scaling = open_source(SourceSpec(path=str(write_geotiff(tmp_path / "wide.tif", data)))).scaling
    assert "whole image" in scaling.sample and max(widths) == 512
    # every one of the 400 patch values is kept (fewer than the thinning limit): 2nd and 98th percentiles
    assert scaling.low[0] == pytest.approx(np.percentile(data[0, 500:520, 500:520], 2))
    assert scaling.high[0] == pytest.approx(np.percentile(data[0, 500:520, 500:520], 98))


@pytest.mark.parametrize("name", ["float_nan.tif", "float_raster_with_nodata.tif"])
def test_real_float_files_mark_nan_and_nodata_as_255(name, tmp_path):
    path = shared_file("geotiff", name)
    mask, summary = run_mask(path, tmp_path / "m.zarr", model="standin", weights="none", workers=1)
    with rasterio.open(path) as src:
        invalid = (src.dataset_mask() == 0) | ~np.isfinite(src.read()).all(axis=0)
    assert invalid.any()
    assert ((mask == 255) == invalid).all()
    assert summary["status"] == "complete"
    assert all(np.isfinite(summary["input"]["scaling"]["low"] + summary["input"]["scaling"]["high"]))


def test_dicom_float_pixel_data_marks_nan_as_255(tmp_path):
    """Float Pixel Data (a parametric map, say) reaches the DICOM source as it is: NaN included."""
    import pydicom

    from tilepipe.testing import write_ct_series

    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    nan_at = {}
    for k, path in enumerate(write_ct_series(tmp_path / "ct", 3, size=64)):
        ds = pydicom.dcmread(path)
        del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
        ds.BitsAllocated = 32
        plane = values.copy()
        plane[10 + k, 20] = np.nan
        ds.FloatPixelData = plane.tobytes()
        ds.save_as(path, enforce_file_format=True)
        nan_at[float(ds.ImagePositionPatient[2])] = (10 + k, 20)
    mask, summary = run_mask(tmp_path / "ct", tmp_path / "m.zarr", model="standin", weights="none", workers=1)
    assert summary["status"] == "complete"
    assert all(np.isfinite(summary["input"]["scaling"]["low"] + summary["input"]["scaling"]["high"]))
    for plane, z in enumerate(sorted(nan_at)):  # planes run along increasing z here
        assert np.argwhere(mask[plane] == 255).tolist() == [list(nan_at[z])]


def test_percentile_statistics_ignore_nan_and_infinities():
    finite = np.arange(101, dtype=np.float32)  # percentile p of 0..100 is p itself
    values = np.concatenate([finite, [np.nan, np.inf, -np.inf, np.nan]])[None]
    scaling = resolve_scaling(ScalingRequest("percentile", (2.0, 98.0)), np.float32, 1,
                              lambda: (np.random.default_rng(0).permutation(values, axis=1), "test sample"))
    assert scaling.low == pytest.approx((2.0,)) and scaling.high == pytest.approx((98.0,))


def test_percentile_statistics_drop_a_pixel_with_any_non_finite_band():
    """A pixel is a column of bands: one bad band makes the whole pixel invalid, as in a read."""
    values = np.stack([np.arange(101, dtype=np.float32)] * 2)
    values[1, 100] = np.nan  # pixel 100 goes; band 0 is then 0..99
    scaling = resolve_scaling(ScalingRequest("percentile", (0.0, 100.0)), np.float32, 2, lambda: (values, "test"))
    assert scaling.low == (0.0, 0.0) and scaling.high == (99.0, 99.0)


@pytest.mark.parametrize("on_device_scaling", [False, True], ids=["host-scaled", "device-scaled"])
def test_engine_gives_finite_probabilities_for_non_finite_invalid_pixels(on_device_scaling):
    """Whatever an invalid pixel holds (NaN, Inf, garbage), the network sees exact zeros there."""
    engine = Engine(load_model(ModelSpec(architecture="standin", weights="none")), EngineOptions(device="cpu"))
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 32, 32), dtype=np.float32)
    valid = np.ones((2, 32, 32), bool)
    valid[0, 5, 7] = valid[1, 20:, :] = False
    dirty = images.copy()
    for n in range(2):
        dirty[n][:, ~valid[n]] = np.nan
    dirty[1, 0, 25, 3] = np.inf
    scaling = IntensityScaling("fixed", (0.0,) * 3, (1.0,) * 3, "test") if on_device_scaling else None
    probs, _ = engine.predict(engine.upload(dirty, valid, scaling))
    assert torch.isfinite(probs).all()
    # the oracle: invalid pixels replaced by the normalisation mean, which normalises to exactly zero
    mean = np.asarray(engine.model.mean, np.float32)[:, None]
    expected_input = images.copy()
    for n in range(2):
        expected_input[n][:, ~valid[n]] = mean
    expected, _ = engine.predict(engine.upload(expected_input, valid))
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize("model, classes", [("standin", 255), ("deeplabv3_resnet101", 256), ("standin", 1000)])
def test_num_classes_of_255_or_more_is_refused_before_any_output(tmp_path, model, classes):
    path = write_geotiff(tmp_path / "img.tif", smooth_image(64, 64))
    out = tmp_path / "m.zarr"
    with pytest.raises(TilepipeError, match=rf"num.classes {classes}.*255.*no-data") as err:
        tilepipe.run(str(path), str(out), model=model, weights="none", num_classes=classes, workers=1)
    assert len(str(err.value).splitlines()) == 1
    assert not out.exists()


def test_num_classes_254_is_accepted():
    assert load_model(ModelSpec(architecture="standin", weights="none", num_classes=254)).num_classes == 254


def test_a_checkpoint_with_255_classes_is_refused(tmp_path):
    """The head's width is read before anything else is built: a lone head weight is enough."""
    ckpt = tmp_path / "wide.pth"
    torch.save({"classifier.4.weight": torch.zeros(255, 256, 1, 1)}, ckpt)
    with pytest.raises(TilepipeError, match=r"wide\.pth.*255-class head.*255.*no-data"):
        load_model(ModelSpec(architecture="deeplabv3_resnet101", weights=str(ckpt)))


@pytest.mark.parametrize("dtype, nodata", [("uint16", 0), ("float32", -9999.0)])
def test_the_nodata_value_needs_every_band_a_non_finite_value_any_band(tmp_path, dtype, nodata):
    """The two rules of ``docs/guide/scenes.md`` (Bad input), on hand-set pixels: a pixel is no-data when every band it uses holds
    the file's nodata value, or when any band it uses holds NaN or an infinity."""
    data = np.full((3, 4, 4), 7, dtype)
    data[:, 0, 0] = nodata  # every band: no-data
    data[0, 0, 1] = nodata  # one band only: valid
    data[:2, 0, 2] = nodata  # bands 1 and 2, not 3: valid, unless only bands 1 and 2 are used
    expected = np.ones((4, 4), bool)
    expected[0, 0] = False
    if dtype == "float32":
        data[1, 1, 1] = np.nan  # one band non-finite: no-data
        data[2, 1, 2] = np.inf
        expected[1, 1] = expected[1, 2] = False
    path = write_geotiff(tmp_path / f"{dtype}.tif", data, nodata=nodata)
    window = tilepipe.grid.Window(0, 0, 4, 4)
    _, valid = open_source(SourceSpec(path=str(path), scaling=ScalingRequest.parse("0,10"))).read(window)
    assert np.array_equal(valid, expected)
    _, valid = open_source(SourceSpec(path=str(path), bands=(1, 2), scaling=ScalingRequest.parse("0,10"))).read(window)
    expected[0, 2] = False  # both bands used hold nodata
    expected[1, 2] = True  # the infinity is in band 3, not used
    assert np.array_equal(valid, expected)
