"""Polygon exports: GeoParquet, GeoPackage and GeoJSON for a scene; QuPath GeoJSON for a slide.

One feature per connected region of a class (:mod:`.regions`, 4-connected), with the class id and
name, written in batches as regions close, so neither the raster nor the whole layer is ever in
memory (except with ``simplify``: keeping shared edges shared needs every polygon at once,
:func:`shapely.coverage_simplify`, so the layer is then held until written).

Where features are placed:

* a scene with a CRS: in the store's CRS through its transform (GeoParquet 1.1 metadata with the
  CRS as PROJJSON; GeoPackage through GDAL; GeoJSON with a ``crs`` member when it is not WGS 84);
* a whole slide made from level 0: ``--to geojson`` writes QuPath's annotation GeoJSON in level-0
  pixel coordinates (``objectType: annotation``, ``classification: {name, color}``);
* a DICOM series, or a scene without a CRS: no polygon export applies (one line says which
  exports do).

Every file is written into a private folder beside OUT and renamed onto OUT only when finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import shapely
from pyproj import CRS

from ..errors import TilepipeError
from ..modes import ExportFormat
from ..sink import MaskStore
from .cog import staged_output
from .colors import palette
from .regions import region_polygons

PIECE = 4096
"""Columns polygonised at a time (whole chunks): memory then stays flat as a scene widens."""
BATCH = 2_000
"""Features written at a time: besides one band and the open regions, all the export holds."""


@dataclass(frozen=True)
class Placement:
    """Where pixel coordinates go: ``transform`` (rasterio order a, b, c, d, e, f) into ``crs``,
    or, for a slide (``crs`` None), the identity into level-0 pixels."""

    transform: tuple[float, ...]
    crs: CRS | None

    @property
    def pixel_area(self) -> float:
        a, b, _, d, e, _ = self.transform
        return abs(a * e - b * d)

    def place(self, geometries: np.ndarray) -> np.ndarray:
        a, b, c, d, e, f = self.transform
        return shapely.transform(geometries, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                         d * xy[:, 0] + e * xy[:, 1] + f]))


def placement(store: MaskStore, fmt: str) -> Placement:
    """The store's placement for ``fmt``, or one line saying which exports apply instead."""
    attrs = store.group.attrs
    dicom = attrs.get("dicom")
    if dicom and dicom.get("kind") == "whole-slide":
        if fmt != ExportFormat.GEOJSON:
            raise TilepipeError(f"{store.url}: a slide has no CRS: --to geojson (QuPath annotations in pixels), "
                                "dicom-seg and png apply")
        if dicom.get("level"):
            raise TilepipeError(f"{store.url}: made from pyramid level {dicom['level']}; QuPath needs level-0 pixel "
                                "coordinates, and the store does not record level 0's size: run on level 0")
        return Placement((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), None)
    if dicom:
        raise TilepipeError(f"{store.url}: a DICOM series has no map coordinates for polygons: "
                            "--to dicom-seg and png apply")
    if not attrs.get("crs_wkt") or store.mask.ndim != 2:
        raise TilepipeError(f"{store.url}: no CRS to place polygons in: --to png applies")
    return Placement(tuple(attrs["transform"][:6]), CRS.from_wkt(attrs["crs_wkt"]))


def export(store: MaskStore, out: str, fmt: str, classes: tuple[str, ...] = (), min_area: float | None = None,
           simplify: float | None = None) -> str:
    """Write the regions of ``store`` to ``out`` as ``fmt``; returns ``out``. ``classes``: ids or
    names to keep (all by default); ``min_area``: drop regions smaller than this (CRS units², or
    pixels for a slide); ``simplify``: tolerance in the same units, shared edges kept shared."""
    place = placement(store, fmt)
    names = list(store.group.attrs.get("class_names") or [])
    wanted = _class_ids(classes, names, store.url)
    chunk = store.mask.chunks[-1]
    regions = region_polygons(store.mask, store.mask.chunks[0], max(chunk, PIECE // chunk * chunk), wanted)
    if min_area:
        regions = ((v, p) for v, p in regions if p.area * place.pixel_area >= min_area)
    batches = _batches(regions, place)
    if simplify:
        batches = [_simplified(list(batches), simplify, place)]
    writer = WRITERS[fmt if place.crs is not None else "qupath"]
    with staged_output(out) as (_, path):
        writer(path, batches, names, place.crs, store.group.attrs)
    return str(out)


def _class_ids(classes: tuple[str, ...], names: list[str], url: str) -> set[int] | None:
    if not classes:
        return None
    ids = set()
    for c in classes:
        if c.isdigit():
            ids.add(int(c))
        elif c in names:
            ids.add(names.index(c))
        else:
            raise TilepipeError(f"--classes {c!r}: not a class of {url} (its classes: {', '.join(names)})")
    return ids


def _batches(regions, place: Placement):
    """``(class ids, placed polygons)`` arrays, BATCH features at a time."""
    while batch := list(islice(regions, BATCH)):
        values, polygons = zip(*batch)
        yield np.array(values, dtype=np.uint8), place.place(np.array(polygons, dtype=object))


def _simplified(batches: list, tolerance: float, place: Placement):
    """All features, their coverage simplified at once (a per-polygon simplify would open gaps
    and overlaps between neighbours). Coverage simplification needs neighbours to share their
    vertices, but a long straight side of one polygon may be several sides of its neighbours:
    splitting every side at each pixel corner first makes the coverage valid."""
    if not batches:
        return np.zeros(0, np.uint8), np.zeros(0, object)
    a, b, _, d, e, _ = place.transform
    pixel_side = min(np.hypot(a, d), np.hypot(b, e))
    values = np.concatenate([v for v, _ in batches])
    noded = shapely.segmentize(np.concatenate([g for _, g in batches]), pixel_side * (1 + 1e-9))
    return values, shapely.coverage_simplify(noded, tolerance)


def _name(names: list[str], value: int) -> str:
    return names[value] if value < len(names) else f"class {value}"


def _write_geoparquet(path: str, batches, names, crs: CRS, attrs) -> None:
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs.to_json_dict()}}}
    schema = pa.schema([("class_id", pa.uint8()), ("class_name", pa.string()), ("geometry", pa.binary())],
                       metadata={b"geo": json.dumps(geo).encode()})
    with pq.ParquetWriter(path, schema) as writer:
        for values, polygons in batches:
            writer.write_table(pa.table([values, [_name(names, v) for v in values], shapely.to_wkb(polygons)],
                                        schema=schema))


def _write_gpkg(path: str, batches, names, crs: CRS, attrs) -> None:
    written = False
    for values, polygons in batches:
        _gpkg_append(path, values, polygons, names, crs, append=written)
        written = True
    if not written:  # an empty layer, still a valid file that says what it would hold
        _gpkg_append(path, np.zeros(0, np.uint8), np.zeros(0, object), names, crs, append=False)


def _gpkg_append(path, values, polygons, names, crs: CRS, append: bool) -> None:
    pyogrio.raw.write(path, geometry=shapely.to_wkb(polygons), field_data=[values.astype(np.int32),
                      np.array([_name(names, v) for v in values], dtype=object)], fields=["class_id", "class_name"],
                      layer="regions", driver="GPKG", geometry_type="Polygon", crs=crs.to_wkt(), append=append)


def _write_geojson(path: str, batches, names, crs: CRS, attrs) -> None:
    authority = crs.to_authority()
    head = {"type": "FeatureCollection"}
    if authority != ("EPSG", "4326"):  # RFC 7946 GeoJSON is WGS 84; GDAL and QGIS read this (2008 GeoJSON) member
        name = "urn:ogc:def:crs:{}::{}".format(*authority) if authority else crs.to_wkt()
        head["crs"] = {"type": "name", "properties": {"name": name}}
    _stream_features(path, head, batches, lambda v: {"class_id": int(v), "class_name": _name(names, v)})


def _write_qupath(path: str, batches, names, crs, attrs) -> None:
    colours = palette(attrs)
    _stream_features(path, {"type": "FeatureCollection"}, batches, lambda v: {
        "objectType": "annotation", "classification": {"name": _name(names, v), "color": colours[v].tolist()}})


def _stream_features(path: str, head: dict, batches, properties) -> None:
    """A FeatureCollection written feature by feature: only one batch is ever in memory."""
    with open(path, "w") as f:
        f.write(json.dumps(head)[:-1] + ', "features": [')
        first = True
        for values, polygons in batches:
            for value, text in zip(values, shapely.to_geojson(polygons)):
                f.write(("\n" if first else ",\n") + '{"type": "Feature", "geometry": ' + text
                        + ', "properties": ' + json.dumps(properties(int(value))) + "}")
                first = False
        f.write("\n]}\n")


WRITERS = {ExportFormat.GEOPARQUET: _write_geoparquet, ExportFormat.GPKG: _write_gpkg,
           ExportFormat.GEOJSON: _write_geojson, "qupath": _write_qupath}
