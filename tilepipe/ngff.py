"""What the pyramid's levels are, said the way viewers read it.

Two descriptions are written to the store's root attributes, both naming the same arrays
(``mask``, ``pyramid/1/mask``, ...):

* ``multiscales`` (every store): the Zarr ``multiscales`` convention that the GeoZarr draft builds
  on, in its settled wording: a ``layout`` of levels, each an ``asset`` path, ``derived_from`` the
  level above, a relative ``transform`` (``scale`` 2 per halved axis, ``translation`` 0: a level's
  pixel grid keeps the top-left corner, as GDAL overviews do) and ``resampling_method`` ``mode``.
  Scenes (GeoTIFF) keep their CF conventions: every level group has its own ``spatial_ref`` and
  ``x``/``y``, so xarray and rioxarray open any level georeferenced.
* ``ome`` (DICOM sources, whole-slide and radiology): an OME-NGFF 0.5 label image (the Zarr v3
  version of the spec): ``multiscales`` with axes in physical units and one ``scale`` (and
  ``translation``) per level from the pixel spacing, and ``image-label`` with each class's colour
  (the exporters' colours, from the model card; no-data transparent) and name. OME-NGFF places a
  pixel's coordinate at
  its centre, so a level of factor ``f`` is shifted by ``(f - 1) / 2`` level-0 pixels. Whole-slide
  spacing is given in micrometres (what a pathologist reads), radiology spacing in millimetres. A
  stack whose slices are not regularly spaced gets no unit on z (its scale is the slice index)
  and the reason in ``metadata.z_axis``: one z scale would misplace its slices.
  The ``ome-zarr`` reader and napari's OME-Zarr plugin open the store as a label image; with the
  ``ome`` key present they read nothing else from the root attributes.
"""

from __future__ import annotations

from .exporters.colors import colormap
from .labels import NO_LABEL

OME_VERSION = "0.5"
MULTISCALES_CONVENTION = {"uuid": "d35379db-88df-4056-af3a-620245f8e347", "name": "multiscales",
                          "description": "Multiscale layout of zarr datasets"}


def multiscales_layout(paths: list[str], ndim: int, resampling: str) -> dict:
    """The ``multiscales`` convention attributes for levels ``paths`` (level 0 first)."""
    identity = [1.0] * ndim
    halving = [1.0] * (ndim - 2) + [2.0, 2.0]
    layout = [{"asset": paths[0], "transform": {"scale": identity, "translation": [0.0] * ndim}}]
    layout += [{"asset": path, "derived_from": above, "transform": {"scale": halving, "translation": [0.0] * ndim},
                "resampling_method": resampling} for above, path in zip(paths, paths[1:])]
    return {"zarr_conventions": [MULTISCALES_CONVENTION],
            "multiscales": {"layout": layout, "resampling_method": resampling}}


def _z_axis_note(dicom: dict) -> str | None:
    """Why the OME z axis holds slice indices rather than millimetres; None when it holds mm.

    OME-NGFF 0.5 gives each axis one scale and one translation, so it can place the slices of a
    regular stack only. For a stack whose slices are not evenly spaced (a spacing change, missing
    slices, volumes at different positions) any one z scale puts slices where they are not (a head
    CT stepping 4.22 then 7.38 mm would end 36 mm short), so z claims no unit and this says why."""
    irregular = dicom.get("irregular_slices")
    if not irregular:
        return None
    return (f"z is the slice index, not a physical coordinate: the slices are not regularly spaced ({irregular}), "
            f"and OME-NGFF can hold one z spacing only; each slice's position is in the root attributes "
            f"dicom.slice_positions (ImagePositionPatient) and dicom.slice_locations (mm along dicom.slice_normal)")


def _spacing(dicom: dict, dims: list[str]) -> tuple[list[float], list[str | None]]:
    """Level-0 spacing and OME unit per axis, from the DICOM geometry attributes: no unit (and a
    scale of 1) on z when the slices have no one spacing (:func:`_z_axis_note`)."""
    slide = dicom.get("kind") == "whole-slide"
    pixel = dicom.get("pixel_spacing")
    factor, unit = (1000.0, "micrometer") if slide else (1.0, "millimeter")
    if not pixel:
        return [1.0] * len(dims), [None] * len(dims)
    by_axis = {"y": float(pixel[0]) * factor, "x": float(pixel[1]) * factor,
               "z": float(dicom.get("slice_spacing") or dicom.get("slice_thickness") or 1.0) * factor}
    units = {"y": unit, "x": unit, "z": unit}
    if _z_axis_note(dicom):
        by_axis["z"], units["z"] = 1.0, None
    return [by_axis.get(d, 1.0) for d in dims], [units.get(d) for d in dims]


def _axis(name: str, unit: str | None) -> dict:
    if name in ("z", "y", "x"):
        return {"name": name, "type": "space", **({"unit": unit} if unit else {})}
    return {"name": name}


def ome_label_image(paths: list[str], dims: list[str], dicom: dict, class_names: list[str], table: dict) -> dict:
    """The ``ome`` attribute of an OME-NGFF 0.5 label image whose levels are ``paths``."""
    spacing, units = _spacing(dicom, dims)
    datasets = []
    for level, path in enumerate(paths):
        f = [1] * (len(dims) - 2) + [2 ** level] * 2
        transforms = [{"type": "scale", "scale": [round(s * k, 9) for s, k in zip(spacing, f)]}]
        if level:
            transforms.append({"type": "translation", "translation": [round(s * (k - 1) / 2, 9) for s, k in zip(spacing, f)]})
        datasets.append({"path": path, "coordinateTransformations": transforms})
    metadata = {"description": "2x2 mode of the level above, no-data ignored"}
    if "z" in dims and (note := _z_axis_note(dicom)):
        metadata["z_axis"] = note
    values = [*range(len(class_names)), NO_LABEL]
    names = [*class_names, "no data"]
    return {
        "version": OME_VERSION,
        "multiscales": [{"name": "mask", "axes": [_axis(d, u) for d, u in zip(dims, units)], "datasets": datasets,
                         "type": "mode", "metadata": metadata}],
        "image-label": {
            "colors": [{"label-value": v, "rgba": list(table[v])} for v in values],
            "properties": [{"label-value": v, "class": name} for v, name in zip(values, names)],
        },
    }


def describe_levels(group, paths: list[str], dims: list[str], resampling: str) -> None:
    """Write both descriptions of the levels ``paths`` into ``group``'s attributes."""
    attrs = dict(group.attrs)
    update = multiscales_layout(paths, len(dims), resampling)
    if "dicom" in attrs:
        update["ome"] = ome_label_image(paths, dims, attrs["dicom"], list(attrs.get("class_names", [])), colormap(attrs))
    group.attrs.update(update)
