"""Polygon exports: the GeoParquet, GeoPackage and GeoJSON layers rasterise back (rasterio, in
the store's CRS) to the mask; each class has as many polygons as ``scipy.ndimage.label`` finds
regions (4-connectivity, its default) on a mask whose regions cross many chunk and block edges;
a slide's QuPath GeoJSON rasterises back in pixel coordinates with its class names and colours;
stores that cannot be placed fail in one line and leave no file."""

import json
import sys

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from affine import Affine
from click.testing import CliRunner
from pyproj import CRS
from rasterio import features
from scipy import ndimage

import tilepipe
from tests.conftest import shared_file
from tests.mask_stores import blobs, write_store
from tilepipe.cli import main
from tilepipe.errors import TilepipeError
from tilepipe.exporters import export
from tilepipe.exporters.colors import PALETTE
from tilepipe.exporters.regions import region_polygons
from tilepipe.sink import NO_LABEL, MaskStore

TRANSFORM = [20.0, 0.0, 500000.0, 0.0, -20.0, 4200000.0]
NAMES = ["a", "b", "c", "d"]


def seamed_mask() -> np.ndarray:
    """Smooth regions of four classes, with rings (holes), pixels touching only at corners and
    long stripes, so that many regions cross the 16 px chunk rows and 32 px strips."""
    mask = blobs(150, 230, 3, seed=7)
    yy, xx = np.mgrid[:150, :230]
    ring = np.abs(np.hypot(yy - 80, xx - 120) - 30) < 4
    mask[ring] = 3
    mask[40:50, 5:225] = 3  # a stripe across every strip
    mask[100:104, 100:104] = np.eye(4, dtype=np.uint8)  # diagonal neighbours: separate regions
    return mask


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    mask = seamed_mask()
    url = str(tmp_path_factory.mktemp("scene") / "scene.zarr")
    write_store(url, mask, {"crs_wkt": CRS.from_epsg(32618).to_wkt(), "transform": TRANSFORM}, chunk=16)
    return url, mask


def rasterised(geometries, values, shape, transform) -> np.ndarray:
    return features.rasterize(zip(geometries, values), out_shape=shape, transform=Affine(*transform),
                              fill=NO_LABEL, dtype="uint8")


def region_counts(mask: np.ndarray) -> dict[int, int]:
    return {int(c): ndimage.label(mask == c)[1] for c in np.unique(mask) if c != NO_LABEL}


def test_geoparquet_rasterises_back_to_the_mask_with_one_polygon_per_region(scene, tmp_path):
    url, mask = scene
    out = export(url, "geoparquet", str(tmp_path / "regions.parquet"))
    layer = gpd.read_parquet(out)
    assert layer.crs == CRS.from_epsg(32618)
    assert pq.read_schema(out).metadata[b"geo"] and json.loads(pq.read_schema(out).metadata[b"geo"])["version"] == "1.1.0"
    back = rasterised(layer.geometry, layer.class_id, mask.shape, TRANSFORM)
    assert (back != mask).mean() <= 0.001
    assert np.array_equal(back, mask)  # shapes and rasterize agree on pixel edges: exact here
    assert layer.groupby("class_id").size().to_dict() == region_counts(mask)
    assert set(layer.class_name) == {NAMES[c] for c in layer.class_id}
    assert layer.geometry.is_valid.all() and (layer.geometry.geom_type == "Polygon").all()
    assert any(len(p.interiors) for p in layer.geometry), "the rings keep their holes"


@pytest.mark.parametrize("rows, cols", [(16, 32), (7, 13), (150, 230), (1, 230)])
def test_regions_stitched_from_pieces_are_the_regions_of_the_whole_mask(rows, cols):
    """Bands and pieces of any size, down to one row: seams between pieces and between bands
    cut no region, and the holes are kept."""
    mask = seamed_mask()
    found = list(region_polygons(mask, rows, cols))
    values = [v for v, _ in found]
    assert np.array_equal(rasterised([p for _, p in found], values, mask.shape, [1, 0, 0, 0, 1, 0]), mask)
    assert {c: values.count(c) for c in set(values)} == region_counts(mask)
    assert all(p.is_valid for _, p in found)


@pytest.mark.parametrize("fmt, name", [("gpkg", "regions.gpkg"), ("geojson", "regions.geojson")])
def test_gpkg_and_geojson_hold_the_same_regions(scene, tmp_path, fmt, name):
    url, mask = scene
    layer = gpd.read_file(export(url, fmt, str(tmp_path / name)))
    assert layer.crs == CRS.from_epsg(32618)
    assert np.array_equal(rasterised(layer.geometry, layer.class_id, mask.shape, TRANSFORM), mask)
    assert layer.groupby("class_id").size().to_dict() == region_counts(mask)


def test_classes_and_min_area_choose_regions(scene, tmp_path):
    url, mask = scene
    out = str(tmp_path / "some.parquet")
    result = CliRunner().invoke(main, ["export", url, out, "--to", "geoparquet", "--classes", "b,3",
                                       "--min-area", str(20 * 400.0)])
    assert result.exit_code == 0, result.output
    layer = gpd.read_parquet(out)
    expected = 0
    for c in (1, 3):
        labels, _ = ndimage.label(mask == c)
        expected += int((np.bincount(labels.ravel())[1:] >= 20).sum())  # 20 pixels of 400 m²
    assert set(layer.class_id) == {1, 3} and len(layer) == expected


def test_simplify_keeps_a_valid_coverage_with_fewer_vertices(scene, tmp_path):
    url, mask = scene
    exact = gpd.read_parquet(export(url, "geoparquet", str(tmp_path / "exact.parquet")))
    simple = gpd.read_parquet(export(url, "geoparquet", str(tmp_path / "simple.parquet"), simplify=40.0))
    assert len(simple) == len(exact)
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < shapely.get_num_coordinates(exact.geometry.values).sum()
    assert shapely.coverage_is_valid(simple.geometry.values)
    assert simple.area.sum() == pytest.approx(exact.area.sum(), rel=0.01)


def test_a_real_geographic_scene_exports_in_its_crs(tmp_path):
    source = shared_file("geotiff", "rmnp-rgb.tif")
    tilepipe.run(str(source), str(tmp_path / "rmnp.zarr"), model="standin", weights="none", tile_size=256,
                 overlap=32, chunk_size=128, block_size=256)
    store = MaskStore.open(str(tmp_path / "rmnp.zarr"))
    mask = store.mask[...]
    layer = gpd.read_parquet(export(store.url, "geoparquet", str(tmp_path / "rmnp.parquet")))
    assert layer.crs == CRS.from_epsg(4326)
    back = rasterised(layer.geometry, layer.class_id, mask.shape, store.group.attrs["transform"])
    assert (back != mask).mean() <= 0.001
    assert layer.groupby("class_id").size().to_dict() == region_counts(mask)


def test_slide_geojson_is_qupath_annotations_in_pixels(tmp_path):
    mask = seamed_mask()
    colours = [[10, 20, 30], [200, 0, 0], [0, 200, 0]]
    url = str(tmp_path / "slide.zarr")
    write_store(url, mask, {"dicom": {"kind": "whole-slide", "level": 0, "pixel_spacing": [0.00025, 0.00025]},
                            "class_colours": colours}, chunk=16)
    out = export(url, "geojson", str(tmp_path / "slide.geojson"))
    collection = json.load(open(out))
    assert collection["type"] == "FeatureCollection" and "crs" not in collection
    props = [f["properties"] for f in collection["features"]]
    assert {p["objectType"] for p in props} == {"annotation"}
    names = [p["classification"]["name"] for p in props]
    for p in props:
        c = NAMES.index(p["classification"]["name"])
        assert p["classification"]["color"] == (colours[c] if c < 3 else PALETTE[c].tolist())
    geometries = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
    back = rasterised(geometries, [NAMES.index(n) for n in names], mask.shape, [1, 0, 0, 0, 1, 0])
    assert np.array_equal(back, mask)
    with pytest.raises(TilepipeError, match="--to geojson .QuPath annotations in pixels., dicom-seg and png apply"):
        export(url, "geoparquet", str(tmp_path / "slide.parquet"))


@pytest.mark.parametrize("attrs, says", [
    ({"dicom": {"kind": "stack", "pixel_spacing": [1, 1]}}, "--to dicom-seg and png apply"),
    ({"crs_wkt": None, "transform": TRANSFORM}, "no CRS to place polygons in: --to png applies"),
    ({"dicom": {"kind": "whole-slide", "level": 2}}, "level 0"),
])
def test_stores_without_a_place_for_polygons_say_what_applies(tmp_path, attrs, says):
    url = str(tmp_path / "s.zarr")
    write_store(url, blobs(40, 40, 2, seed=1), attrs)
    result = CliRunner().invoke(main, ["export", url, str(tmp_path / "out.geojson"), "--to", "geojson"])
    assert result.exit_code != 0 and says in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_a_missing_library_names_the_extra(scene, tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "tilepipe.exporters.vector", raising=False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(TilepipeError, match=r"tilepipe\[vector\]"):
        export(scene[0], "geoparquet", str(tmp_path / "x.parquet"))
