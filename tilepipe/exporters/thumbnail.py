"""The input image read small and scaled as the run scaled it: what the plan preview draws on and
what the PNG export's overlay blends under the classes.

It never reads the whole input at full resolution: a GeoTIFF with overviews is read from them (GDAL
picks the overview for the requested size), a whole-slide DICOM from the smallest pyramid level at
least as large as the picture, and anything else (a plane of a DICOM stack, a GeoTIFF without
overviews) by a strided read of one source row per picture row, columns sampled at pixel centres
(the memory of one row).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..grid import Window
from ..sources import open_source
from ..sources.scaling import IntensityScaling, plane_scaling


def centres(size: int, count: int) -> np.ndarray:
    """Indices of the source pixels under the centres of ``count`` picture pixels."""
    return ((np.arange(count) + 0.5) * size / count).astype(np.int64)


def _strided(source, shape: tuple[int, int], plane: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One source row per thumbnail row, columns sampled at pixel centres."""
    rows, cols = (centres(n, c) for n, c in zip((source.height, source.width), shape))
    pixels = np.empty((len(source.bands), *shape), source.dtype)
    valid = np.empty(shape, bool)
    for i, row in enumerate(rows):
        line, ok = source.read(Window(int(row), 0, 1, source.width), plane)
        pixels[:, i], valid[i] = line[:, 0, cols], ok[0, cols]
    return pixels, valid


def _from_slide_level(source, shape: tuple[int, int]):
    """The smallest pyramid level below the run's that is at least ``shape``, opened alone."""
    layout = getattr(source, "layout", None)
    if getattr(layout, "kind", None) != "whole-slide":
        return None
    smaller = [level for level in range(layout.level + 1, len(layout.level_shapes))
               if layout.level_shapes[level][0] >= shape[0] and layout.level_shapes[level][1] >= shape[1]]
    if not smaller:
        return None
    return _strided(open_source(replace(source.spec, level=smaller[-1])), shape, None)


def thumbnail(source, shape: tuple[int, int], plane: int | None,
              scaling: IntensityScaling | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (h, w, 3) uint8, valid (h, w) bool)`` of the input (``plane`` of a stack) at ``shape``,
    scaled with ``scaling`` (by default the source's own for that plane, its volume's for a 4-D
    series) and clipped to 0-255: one band as grey, the first three of more as RGB."""
    found = None
    if source.format == "GeoTIFF" and source.overview_factors:
        found = source.read_resampled(shape)
    elif plane is None:
        found = _from_slide_level(source, shape)
    pixels, valid = found if found is not None else _strided(source, shape, plane)
    scaled = np.clip((scaling or plane_scaling(source, plane)).apply(pixels), 0, 1)  # a card's mean/std is not clipped
    grey = (scaled[:3] if len(scaled) >= 3 else scaled[:1]) * 255
    return np.broadcast_to(grey.round().astype(np.uint8), (3, *shape)).transpose(1, 2, 0).copy(), valid
