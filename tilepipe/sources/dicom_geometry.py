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
at all, only its per-slice positions. "Regular" is decided here, with one stated tolerance
(:data:`STEP_TOLERANCE`) on the positions in slice order: real headers carry float noise (an
enhanced MR's steps of 2.400000, 2.400002 and 2.399998 mm), which must not cost a stack its affine.
What an irregular stack is instead (missing slices, a spacing change) is :mod:`.dicom_spacing`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .dicom_spacing import Gap, Spacing, spacing_of

ORIENTATION_TOLERANCE = 1e-4
"""Direction cosines closer than this are the same orientation (DS values carry ~6 digits)."""
DUPLICATE_TOLERANCE_MM = 1e-3
"""Two slices whose positions along the normal differ by less than this are the same slice."""
STEP_TOLERANCE = 0.01
"""A stack is regular when every slice origin lies within this fraction of the slice step of
``first origin + k x step`` (``step``: first to last origin over the slice count less one). It
bounds what the affine can be off at any slice (1 % of a step: 0.024 mm for 2.4 mm slices), is the
relative tolerance highdicom uses for slice spacing, and applies to the whole position vector, so
in-plane drift counts too. Header noise (DS values of ~6 digits, 1e-5 mm) is far below it."""
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
    def spacing(self) -> Spacing:
        """The runs of one step and the gaps of missing slices (:mod:`.dicom_spacing`)."""
        return spacing_of(self.locations)

    @property
    def gaps(self) -> tuple[Gap, ...]:
        """Steps that are a whole multiple (2 or more) of the spacing around them: slices missing."""
        return self.spacing.gaps


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

    Regular means every origin within ``STEP_TOLERANCE`` steps of ``first + k x step``, checked on
    the positions in the order given (the stacking direction may lean off the normal: gantry tilt).
    Not highdicom's ``get_volume_positions(..., sort=False)``: it de-duplicates positions with
    ``np.unique``, which sorts them by x first, so in-plane noise of 1e-5 mm scrambles a regular
    stack and it answers None."""
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
    k = np.arange(len(points))
    off = float(np.linalg.norm(points - (points[0] + k[:, None] * step), axis=1).max())
    allowed = STEP_TOLERANCE * length / (len(points) - 1)
    if off <= allowed:
        return SliceSteps(tuple(float(v) for v in step), tilt)
    along = points @ normal
    along_off = float(np.abs(along - (along[0] + k * (along[-1] - along[0]) / (len(points) - 1))).max())
    if along_off <= allowed:
        return SliceSteps(None, tilt, f"the slice origins are not on one line (up to {off:.3g} mm off it)")
    steps = np.abs(np.diff(along))
    why = spacing_of(np.sort(along)).describe() or (f"uneven slice spacing: steps from {steps.min():.4g} to "
                                                    f"{steps.max():.4g} mm, the origins up to {along_off:.3g} mm "
                                                    f"from one regular step")
    return SliceSteps(None, tilt, why)


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
