"""Pure geometry of a DICOM stack: which way the slices face, their order, the gaps between them and
the step from one slice origin to the next.

Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of the
row and column directions of ImageOrientationPatient), never by InstanceNumber or file name: both
are set by whoever wrote the files, and neither is promised to follow the anatomy. Ascending
projection is the order ITK, SimpleITK and most viewers use, so the mask's z axis lines up with
theirs. Nothing here does I/O, so every rule is property-testable.

The affine's slice column is the real step between slice origins, read from the positions, never
"normal x spacing": with gantry tilt the origins also move within the image plane, and a stack
whose origins do not advance by one regular step (a missing slice, uneven spacing) has no affine
at all, only its per-slice positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from highdicom.spatial import get_volume_positions

ORIENTATION_TOLERANCE = 1e-4
"""Direction cosines closer than this are the same orientation (DS values carry ~6 digits)."""
DUPLICATE_TOLERANCE_MM = 1e-3
"""Two slices whose positions along the normal differ by less than this are the same slice."""
GAP_FACTOR = 1.5
"""A step over this many median spacings means slices are missing (the issue's rule)."""
STEP_TOLERANCE = 0.01
"""A stack is regular when every slice origin lies within this fraction of the slice step of
``first origin + k x step``: highdicom's default relative tolerance for slice spacing, applied to
the whole position vector (so in-plane drift counts too)."""
TILT_REPORTED_DEGREES = 0.1
"""Angles between the slice step and the normal below this are rounding in the headers, not tilt."""


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


@dataclass(frozen=True)
class SliceSteps:
    """How the origins of an ordered stack advance from one slice to the next."""

    step: tuple[float, float, float] | None
    """The regular step vector in mm (LPS); None for a single slice or an irregular stack."""
    tilt_degrees: float | None
    """Angle between the stack's direction (first to last origin) and the slice normal: the gantry
    tilt of a tilted CT, 0 for an ordinary stack, None for a single slice."""
    irregular: str | None = None
    """Why the origins do not advance by one step (None when they do)."""


def slice_steps(positions: Sequence[Sequence[float]], orientation: Sequence[float]) -> SliceSteps:
    """The step between the origins of slices already in stack order, if there is one.

    highdicom's :func:`~highdicom.spatial.get_volume_positions` decides whether the spacing along
    the normal is regular (no duplicates, no gaps, steps within ``STEP_TOLERANCE``); the stacking
    direction may lean off the normal (gantry tilt), so its perpendicularity test is opened wide and
    the full position vectors are checked against the line ``first + k x step`` here instead."""
    points = np.asarray(positions, float).reshape(-1, 3)
    if len(points) < 2:
        return SliceSteps(None, None)
    normal = slice_normal(orientation)
    span = points[-1] - points[0]
    length = float(np.linalg.norm(span))
    if length < DUPLICATE_TOLERANCE_MM:
        return SliceSteps(None, None, "the first and last slices share one position")
    tilt = float(np.degrees(np.arccos(np.clip(abs(span @ normal) / length, 0.0, 1.0))))
    tilt = tilt if tilt >= TILT_REPORTED_DEGREES else 0.0
    step = span / (len(points) - 1)
    along = np.diff(points @ normal)
    spacing, _ = get_volume_positions(points, orientation, rtol=STEP_TOLERANCE, perpendicular_tol=1.0, sort=False)
    if spacing is None:
        median = float(np.median(np.abs(along)))
        gaps = int(np.sum(np.abs(along) > GAP_FACTOR * median))
        why = f"{gaps} gap(s) over {GAP_FACTOR:g}x the median step" if gaps else "uneven slice spacing"
        return SliceSteps(None, tilt, f"{why}: steps along the normal from {np.abs(along).min():.4g} to "
                                      f"{np.abs(along).max():.4g} mm")
    off = points - (points[0] + np.arange(len(points))[:, None] * step)
    worst = float(np.linalg.norm(off, axis=1).max())
    if worst > STEP_TOLERANCE * float(np.linalg.norm(step)):
        return SliceSteps(None, tilt, f"the slice origins are not on one line (up to {worst:.3g} mm off it)")
    return SliceSteps(tuple(float(v) for v in step), tilt)


def stack_affine(origin: Sequence[float], orientation: Sequence[float], pixel_spacing: Sequence[float],
                 slice_step: Sequence[float]) -> list[list[float]]:
    """4x4 matrix taking a voxel index ``(z, y, x, 1)`` of the mask to patient coordinates in mm (LPS).

    DICOM's PixelSpacing is (between rows, between columns): y steps along the column direction
    (the second triplet of ImageOrientationPatient), x along the row direction (the first). The z
    column is ``slice_step``, the vector from one slice origin to the next: along the normal for
    an ordinary stack, sheared by a gantry tilt."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(slice_step, float)
    affine[:3, 1] = col * float(pixel_spacing[0])
    affine[:3, 2] = row * float(pixel_spacing[1])
    affine[:3, 3] = np.asarray(origin, float)
    return affine.tolist()
