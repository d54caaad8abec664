"""Pure geometry of a DICOM stack: which way the slices face, their order and the gaps between them.

Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of the
row and column directions of ImageOrientationPatient), never by InstanceNumber or file name: both
are set by whoever wrote the files, and neither is promised to follow the anatomy. Ascending
projection is the order ITK, SimpleITK and most viewers use, so the mask's z axis lines up with
theirs. Nothing here does I/O, so every rule is property-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

ORIENTATION_TOLERANCE = 1e-4
"""Direction cosines closer than this are the same orientation (DS values carry ~6 digits)."""
DUPLICATE_TOLERANCE_MM = 1e-3
"""Two slices whose positions along the normal differ by less than this are the same slice."""
GAP_FACTOR = 1.5
"""A step over this many median spacings means slices are missing (the issue's rule)."""


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the slice plane: row direction x column direction."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ValueError(f"ImageOrientationPatient {list(orientation)} has parallel row and column directions")
    return normal / norm


def same_orientation(a: Sequence[float], b: Sequence[float]) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=ORIENTATION_TOLERANCE))


def distinct_orientations(orientations: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """The different orientations among ``orientations``, first occurrence first."""
    found: list[tuple[float, ...]] = []
    for o in orientations:
        if not any(same_orientation(o, f) for f in found):
            found.append(tuple(float(v) for v in o))
    return found


@dataclass(frozen=True)
class Gap:
    """Slices missing between ordered slices ``after`` and ``after + 1``."""

    after: int
    step: float
    missing: int


@dataclass(frozen=True)
class StackOrder:
    """Where each input slice goes: ``order[k]`` is the input index of the k-th slice."""

    order: tuple[int, ...]
    locations: tuple[float, ...]
    """Position of each ordered slice along the normal, in mm, ascending."""

    @property
    def spacings(self) -> tuple[float, ...]:
        """The step from each ordered slice to the next (one fewer than the slices)."""
        return tuple(float(v) for v in np.diff(self.locations))

    @property
    def median_spacing(self) -> float | None:
        steps = self.spacings
        return float(np.median(steps)) if steps else None

    @property
    def duplicates(self) -> tuple[tuple[int, int], ...]:
        """Pairs of input indices that sit at the same location."""
        return tuple((self.order[k], self.order[k + 1]) for k, step in enumerate(self.spacings)
                     if step < DUPLICATE_TOLERANCE_MM)

    @property
    def gaps(self) -> tuple[Gap, ...]:
        """Steps over ``GAP_FACTOR`` times the median spacing, with the number of slices missing."""
        median = self.median_spacing
        if not median or median < DUPLICATE_TOLERANCE_MM:
            return ()
        return tuple(Gap(k, step, max(1, round(step / median) - 1)) for k, step in enumerate(self.spacings)
                     if step > GAP_FACTOR * median)


def order_stack(positions: Sequence[Sequence[float]], orientation: Sequence[float]) -> StackOrder:
    """Order slices by their position along the normal of ``orientation`` (stable for ties)."""
    locations = np.asarray(positions, float).reshape(-1, 3) @ slice_normal(orientation)
    order = np.argsort(locations, kind="stable")
    return StackOrder(tuple(int(i) for i in order), tuple(float(v) for v in locations[order]))


def stack_affine(origin: Sequence[float], orientation: Sequence[float], pixel_spacing: Sequence[float],
                 slice_spacing: float) -> list[list[float]]:
    """4x4 matrix taking a voxel index ``(z, y, x, 1)`` of the mask to patient coordinates in mm (LPS).

    DICOM's PixelSpacing is (between rows, between columns): y steps along the column direction
    (the second triplet of ImageOrientationPatient), x along the row direction (the first)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    affine = np.eye(4)
    affine[:3, 0] = slice_normal(orientation) * slice_spacing
    affine[:3, 1] = col * float(pixel_spacing[0])
    affine[:3, 2] = row * float(pixel_spacing[1])
    affine[:3, 3] = np.asarray(origin, float)
    return affine.tolist()
