"""Image sources: one module per format behind the small :class:`Source` protocol.

A task never carries an open file: it carries a :class:`SourceSpec` (path and options) and calls
:func:`open_source`, which opens the file once per process and run and caches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from ..grid import Window
from .scaling import IntensityScaling, ScalingRequest


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """Everything needed to (re)open a source in any process."""

    path: str
    bands: tuple[int, ...] | None = None
    bands_from: str | None = None
    """Where ``bands`` came from when the user did not give them (``the model card landcover.yaml``):
    bands the file cannot give are then refused naming it, not a ``--bands`` nobody typed."""
    scaling: ScalingRequest = ScalingRequest()
    series: str | None = None
    """DICOM: the SeriesInstanceUID to read when a folder holds several series."""
    window: str | None = None
    """DICOM: ``CENTER,WIDTH`` or a preset name; ``None`` = the file's own window, else percentiles."""
    level: int = 0
    """Whole-slide DICOM: the pyramid level (0 = highest resolution)."""
    select: str | None = None
    """DICOM: ``KEY=VALUE`` keeps the frames of one volume of a 4-D series (e.g. ``EchoNumbers=1``)."""


class Source(Protocol):
    spec: SourceSpec
    format: str
    height: int
    width: int
    depth: int | None
    bands: tuple[int, ...]
    dtype: np.dtype
    scaling: IntensityScaling

    def read(self, window: Window, plane: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(pixels (len(bands), h, w) in the file's dtype, valid (h, w) bool)``.

        Boundless: pixels outside the image are zero and invalid."""

    def geometry(self) -> dict:
        """JSON attributes that place the mask in the world (CRS and transform, or patient space)."""

    def coordinates(self) -> dict[str, np.ndarray]:
        """1-D coordinate arrays (pixel centres) to store beside the mask, by dimension name."""

    def describe(self) -> dict:
        """JSON facts about the input for the summary."""


@lru_cache(maxsize=8)
def open_source(spec: SourceSpec, run_id: str | None = None) -> Source:
    """The source for ``spec.path``: DICOM for a folder, a DICOMDIR, a ``.dcm`` file or any file
    with the DICM preamble; GeoTIFF (anything GDAL reads) otherwise.

    ``run_id`` is part of the cache key only: the blocks of one run share one handle per process,
    and a later run (in a notebook, or on a long-lived Dask worker) opens the file afresh, since it
    may have been replaced in between."""
    from .dicom_files import is_dicom_path

    if is_dicom_path(spec.path):
        from .dicom import DicomSource

        return DicomSource(spec)
    from .geotiff import GeoTiffSource

    return GeoTiffSource(spec)
