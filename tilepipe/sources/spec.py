"""What a source is: the :class:`SourceSpec` a task carries and the :class:`Source` protocol
every format's reader follows. Apart from :func:`tilepipe.sources.open_source`, which imports the
readers, so that the readers import these without importing themselves back.
"""

from __future__ import annotations

from dataclasses import dataclass
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
