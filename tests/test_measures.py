"""Per-class measures in the run summary: pixels, shares, areas and volumes equal a bincount of
the mask (read back in the test) times a pixel area or voxel volume worked out in the test from
the transform, pyproj's Geod on each pixel, or the DICOM headers; a store whose blocks were written
by two handles (a resumed run) sums them all."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import shapely
from pyproj import CRS, Geod

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tests.exit_after_blocks import EXIT_CODE
from tilepipe.sink import NO_LABEL, MaskStore
from tilepipe.testing import write_ct_series
from tests.mask_stores import blobs, write_store

STANDIN = dict(model="standin", weights="none")


def by_id(classes: list[dict]) -> dict:
    return {c["id"]: c for c in classes}


def test_projected_scene_areas_are_the_bincount_times_the_transform_determinant(tmp_path):
    mask = blobs(150, 230, 4, seed=1)
    transform = [10.0, 2.0, 500000.0, 1.5, -10.0, 4200000.0]  # sheared: |a·e − b·d| = 103
    store = write_store(str(tmp_path / "p.zarr"), mask, {"crs_wkt": CRS.from_epsg(32618).to_wkt(),
                                                           "transform": transform}, handles=2)
    measures = tilepipe.class_measures(store.url)
    counts = np.bincount(mask[mask != NO_LABEL], minlength=4)
    got = by_id(measures["classes"])
    assert measures["valid_pixels"] == counts.sum() and measures["blocks_tallied"] == "20 of 20 blocks"
    for label, n in enumerate(counts):
        assert got[label]["pixels"] == n
        assert got[label]["share"] == pytest.approx(n / counts.sum(), abs=1e-6)
        assert got[label]["area_m2"] == pytest.approx(n * 103.0, rel=1e-5)
        assert got[label]["area_ha"] == pytest.approx(n * 103.0 / 1e4, rel=1e-5)


def test_feet_are_converted_to_square_metres(tmp_path):
    mask = blobs(40, 50, 2, seed=2)
    store = write_store(str(tmp_path / "ft.zarr"), mask, {"crs_wkt": CRS.from_epsg(2263).to_wkt(),  # US survey feet
                                                            "transform": [3.0, 0, 1e6, 0, -3.0, 2e5]})
    counts = np.bincount(mask[mask != NO_LABEL])
    foot = 1200 / 3937
    assert [c["area_m2"] for c in tilepipe.class_measures(store.url)["classes"]] == \
        pytest.approx(counts * 9 * foot ** 2, rel=1e-5)


def test_geographic_scene_areas_are_each_pixels_geodesic_area(tmp_path):
    mask = blobs(48, 36, 3, seed=3)
    a, c, e, f = 0.05, 10.0, -0.05, 61.0
    store = write_store(str(tmp_path / "g.zarr"), mask, {"crs_wkt": CRS.from_epsg(4326).to_wkt(),
                                                           "transform": [a, 0, c, 0, e, f]}, chunk=16)
    geod = Geod(ellps="WGS84")
    expected = np.zeros(3)
    for (row, col), label in np.ndenumerate(mask):  # every pixel, as a shapely box on the ellipsoid
        if label != NO_LABEL:
            box = shapely.box(c + a * col, f + e * (row + 1), c + a * (col + 1), f + e * row)
            expected[label] += abs(geod.geometry_area_perimeter(box)[0])
    measures = tilepipe.class_measures(store.url)
    assert [g["area_m2"] for g in measures["classes"]] == pytest.approx(expected, rel=1e-5)
    assert "Geod" in measures["pixel"]
    # 0.05° x 0.05° at 60°N is about 5.57 km x 2.79 km (hand-worked: 111.4 km per degree of latitude)
    assert 15.3e6 < expected.sum() / (mask != NO_LABEL).sum() < 15.8e6


def test_a_rotated_geographic_transform_says_why_it_has_no_area(tmp_path):
    store = write_store(str(tmp_path / "r.zarr"), blobs(20, 20, 2, seed=4),
                        {"crs_wkt": CRS.from_epsg(4326).to_wkt(), "transform": [0.01, 0.001, 10, 0.001, -0.01, 50]})
    measures = tilepipe.class_measures(store.url)
    assert "rotated" in measures["pixel"] and "area_m2" not in measures["classes"][0]


def test_no_crs_gives_pixel_counts_and_says_so(tmp_path):
    mask = blobs(30, 30, 2, seed=5)
    measures = tilepipe.class_measures(write_store(str(tmp_path / "n.zarr"), mask, {"crs_wkt": None,
                                                                                       "transform": [1, 0, 0, 0, -1, 0]}).url)
    assert "no CRS" in measures["pixel"]
    assert [c["pixels"] for c in measures["classes"]] == np.bincount(mask[mask != NO_LABEL]).tolist()


def test_regular_series_volumes_come_from_the_voxel_size_in_the_headers(tmp_path):
    paths = write_ct_series(tmp_path / "ct", 5, size=64, spacing=2.5)
    summary = tilepipe.run(str(tmp_path / "ct"), str(tmp_path / "ct.zarr"), **STANDIN)
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    voxel = float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1]) * 2.5  # slices 2.5 mm apart, as written
    mask = MaskStore.open(str(tmp_path / "ct.zarr")).mask[...]
    counts = np.bincount(mask[mask != NO_LABEL])
    got = by_id(summary["measures"]["classes"])
    for label in np.flatnonzero(counts):
        assert got[label]["volume_mm3"] == pytest.approx(counts[label] * voxel, rel=1e-5)
        assert got[label]["volume_ml"] == pytest.approx(counts[label] * voxel / 1000, rel=1e-5)
    assert "## Measures per class" in summary.to_markdown() and "mL" in summary.to_markdown()


def test_irregular_series_uses_each_slices_own_spacing(tmp_path):
    z = [0.0, 2.0, 6.0, 7.0]
    write_ct_series(tmp_path / "ct", 4, size=64, positions=[np.array([-160.0, -160.0, k]) for k in z])
    summary = tilepipe.run(str(tmp_path / "ct"), str(tmp_path / "ct.zarr"), **STANDIN)
    mask = MaskStore.open(str(tmp_path / "ct.zarr")).mask[...]
    thickness = [2.0, 3.0, 2.5, 1.0]  # half the gap to each neighbour, worked by hand
    expected = sum(np.bincount(mask[k][mask[k] != NO_LABEL], minlength=21) * t * 5.0 ** 2
                   for k, t in enumerate(thickness))
    measures = summary["measures"]
    assert "irregular" in measures["pixel"]
    assert [c["volume_mm3"] for c in measures["classes"]] == pytest.approx(expected[expected > 0], rel=1e-5)


def test_a_4d_series_is_measured_per_volume(tmp_path):
    write_ct_series(tmp_path / "ct", 3, size=64, spacing=4.0, echoes=2)
    summary = tilepipe.run(str(tmp_path / "ct"), str(tmp_path / "ct.zarr"), **STANDIN)
    mask = MaskStore.open(str(tmp_path / "ct.zarr")).mask[...]
    measures = summary["measures"]
    assert [v["volume"] for v in measures["volumes"]] == [0, 1]
    for v, volume in enumerate(measures["volumes"]):
        counts = np.bincount(mask[v][mask[v] != NO_LABEL])
        assert [c["pixels"] for c in volume["classes"]] == counts[counts > 0].tolist()
        assert [c["volume_mm3"] for c in volume["classes"]] == pytest.approx(counts[counts > 0] * 5.0 ** 2 * 4.0,
                                                                             rel=1e-5)
    assert measures["valid_pixels"] == (mask != NO_LABEL).sum()


def test_slide_areas_come_from_the_pixel_spacing_in_the_header(tmp_path):
    folder = shared_file("dicom", "wsi_cmu1")
    summary = tilepipe.run(str(folder), str(tmp_path / "slide.zarr"), **STANDIN)
    store = MaskStore.open(str(tmp_path / "slide.zarr"))
    level0 = next(ds for ds in map(pydicom.dcmread, sorted(folder.iterdir()))
                  if ds.TotalPixelMatrixRows == store.mask.shape[0])
    spacing = level0.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    mask = store.mask[...]
    counts = np.bincount(mask[mask != NO_LABEL])
    assert [c["area_mm2"] for c in summary["measures"]["classes"]] == \
        pytest.approx(counts[counts > 0] * float(spacing[0]) * float(spacing[1]), rel=1e-5)


def test_a_resumed_run_measures_the_blocks_of_both_runs(tmp_path):
    """The first run ends abruptly after its 3rd block (tests/exit_after_blocks.py); the resumed
    run computes only the others, and its summary still counts every pixel of the mask."""
    tif = write_geotiff(tmp_path / "scene.tif", smooth_image(300, 500, seed=4))
    out = tmp_path / "scene.zarr"
    options = ["--model", "standin", "--weights", "none", "--tile-size", "128", "--overlap", "16",
               "--chunk-size", "64", "--block-size", "128", "--workers", "1"]
    helper = Path(__file__).parent / "exit_after_blocks.py"
    first = subprocess.run([sys.executable, str(helper), "3", "run", str(tif), "-o", str(out), *options],
                           capture_output=True, text=True)
    assert first.returncode == EXIT_CODE, first.stderr
    summary = tilepipe.run(str(tif), str(out), resume=True, model="standin", weights="none", tile_size=128,
                           overlap=16, chunk_size=64, block_size=128, workers=1)
    assert 0 < summary["plan"]["blocks_reused"] < summary["plan"]["blocks"]
    mask = MaskStore.open(str(out)).mask[...]
    counts = np.bincount(mask[mask != NO_LABEL])
    assert [c["pixels"] for c in summary["measures"]["classes"]] == counts[counts > 0].tolist()
    assert [c["area_m2"] for c in summary["measures"]["classes"]] == pytest.approx(counts[counts > 0] * 900.0,
                                                                                rel=1e-5)
