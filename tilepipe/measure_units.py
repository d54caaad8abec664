"""What one pixel of a mask measures in the world, read from the store's geometry attributes.

One :class:`PixelMeasure` per store, by what the store was made from:

* a scene in a projected CRS: every pixel has the area ``|a·e − b·d|`` of the transform, in
  the CRS's linear unit squared, converted to m² (then ha);
* a scene in a geographic CRS with a north-up transform: a pixel's area on the ellipsoid
  depends on its latitude only, so one :class:`pyproj.Geod` polygon per pixel row gives it
  (:func:`geodesic_row_areas`, applied as blocks are tallied); a rotated transform makes the area
  vary along a row too, and is left out, saying why;
* a DICOM series: the voxel volume ``|det|`` of the stored affine (mm³, then mL); without an
  affine (irregular slices) each slice's own thickness, half the gap to each neighbour;
* a whole slide: the pixel spacing's area (mm²);
* anything else (no CRS, no spacing): pixel counts only, and the note says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PixelMeasure:
    note: str
    """One sentence: what a pixel measures here, or why nothing."""
    per_pixel: float | None = None
    """The measure of one pixel (voxel) in the first unit of ``units``; None when it varies."""
    per_slice: tuple[float, ...] | None = None
    """Voxel volume of each slice of a volume (mm³), when it varies from slice to slice."""
    units: tuple[tuple[str, float], ...] = ()
    """``(key, scale)``: each reported quantity is the base measure times ``scale``."""
    geodesic: bool = False
    """Areas come from the blocks' geodesic records (row 1 of a tally) instead."""
    transform: tuple[float, ...] = ()
    ellipsoid: tuple[float, float] = (0.0, 0.0)
    """``(a, f)`` of the CRS's ellipsoid, for :func:`geodesic_row_areas`."""

    def quantities(self, per_plane: np.ndarray) -> dict[str, np.ndarray]:
        """Per label value, each quantity of ``units``, from ``(planes, 2, bins)`` summed records."""
        if self.geodesic:
            base = per_plane[:, 1].sum(axis=0)
        elif self.per_slice is not None:
            slices = np.resize(np.asarray(self.per_slice), len(per_plane))  # a 4-D series repeats its volume's slices
            base = slices @ per_plane[:, 0]
        elif self.per_pixel is not None:
            base = per_plane[:, 0].sum(axis=0) * self.per_pixel
        else:
            return {}
        return {key: base * scale for key, scale in self.units}


AREA_M2 = (("area_m2", 1.0), ("area_ha", 1e-4))
VOLUME_MM3 = (("volume_mm3", 1.0), ("volume_ml", 1e-3))


def pixel_measure(attrs: dict) -> PixelMeasure:
    """The measure of one pixel of the store whose group attributes are ``attrs``."""
    if attrs.get("dicom"):
        return _dicom_measure(attrs["dicom"])
    transform, wkt = attrs.get("transform"), attrs.get("crs_wkt")
    if not transform:
        return PixelMeasure("no transform: pixel counts only")
    if not wkt:
        return PixelMeasure("no CRS: pixel counts only (a pixel's size in the world is unknown)")
    from pyproj import CRS

    crs = CRS.from_wkt(wkt)
    a, b, _, d, e, _ = transform[:6]
    authority = crs.to_authority()
    name = ":".join(authority) if authority else f"'{crs.name}'"
    if crs.is_geographic:
        if b or d:
            return PixelMeasure(f"geographic CRS {name} with a rotated transform: a pixel's area varies along "
                                "rows as well as with latitude; pixel counts only")
        geod = crs.get_geod()
        return PixelMeasure(f"geographic CRS {name}: each pixel row's area on the ellipsoid "
                            f"(a = {geod.a} m, f = {geod.f:.9g}) from pyproj's Geod, summed per block as written",
                            units=AREA_M2, geodesic=True, transform=tuple(transform[:6]), ellipsoid=(geod.a, geod.f))
    metres = crs.axis_info[0].unit_conversion_factor if crs.axis_info else None
    if not metres:
        return PixelMeasure(f"CRS {name} has no linear unit: pixel counts only")
    area = abs(a * e - b * d) * metres ** 2
    return PixelMeasure(f"projected CRS {name}: a pixel is |a·e − b·d| = {area:.6g} m²", per_pixel=area, units=AREA_M2)


def _dicom_measure(geometry: dict) -> PixelMeasure:
    spacing = geometry.get("pixel_spacing")
    if not spacing:
        return PixelMeasure("the DICOM input has no PixelSpacing: pixel counts only")
    area = float(spacing[0]) * float(spacing[1])
    if geometry.get("kind") == "whole-slide":
        return PixelMeasure(f"slide pixel spacing {spacing[0]} x {spacing[1]} mm: a pixel is {area:.6g} mm²",
                            per_pixel=area, units=(("area_mm2", 1.0),))
    affine = geometry.get("affine")
    if affine:
        voxel = abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3])))
        return PixelMeasure(f"voxel |det| of the affine = {voxel:.6g} mm³", per_pixel=voxel, units=VOLUME_MM3)
    locations = geometry.get("slice_locations")
    if locations and len(locations) > 1:
        gaps = np.abs(np.diff(np.asarray(locations, float)))
        thickness = (np.r_[gaps[0], gaps] + np.r_[gaps, gaps[-1]]) / 2
        return PixelMeasure(f"no single voxel size (slices irregular): each slice's voxel is the pixel area "
                            f"{area:.6g} mm² times half the gap to each neighbour", per_slice=tuple(thickness * area),
                            units=VOLUME_MM3)
    return PixelMeasure(f"no slice spacing: pixel area {area:.6g} mm² per plane", per_pixel=area,
                        units=(("area_mm2", 1.0),))


def geodesic_row_areas(measure: PixelMeasure):
    """``rows -> m² of one pixel in each row``, for a north-up transform in a geographic CRS: the
    geodesic polygon of one pixel's four corners (its area does not depend on the longitude)."""
    from pyproj import Geod

    geod = Geod(a=measure.ellipsoid[0], f=measure.ellipsoid[1])
    a, _, c, _, e, f = measure.transform

    def row_areas(rows: np.ndarray) -> np.ndarray:
        lons = [c, c + a, c + a, c]
        return np.array([abs(geod.polygon_area_perimeter(lons, [f + e * r, f + e * r, f + e * (r + 1),
                                                                f + e * (r + 1)])[0]) for r in rows])

    return row_areas
