"""A series of slices, or a multi-frame image, as a stack of planes in patient-geometry order.

Every frame of every instance of the series becomes one plane. When all frames are placed
(ImagePositionPatient and ImageOrientationPatient, or the enhanced functional groups), they are
ordered along the slice normal (:mod:`.dicom_geometry`); a stack that cannot be one volume (mixed
orientations, duplicate positions, differing sizes) is refused, a stack with missing slices is kept
with a warning and its real positions recorded. Frames with no position at all (secondary capture,
ultrasound cine) keep InstanceNumber and frame order, which is all the files say about them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TilepipeError
from ..grid import Window
from .dicom_files import FrameInfo, Instance
from .dicom_geometry import (
    StackOrder,
    distinct_orientations,
    order_stack,
    same_orientation,
    slice_normal,
    stack_affine,
)


@dataclass(frozen=True)
class Frame:
    """One decodable frame and its calibration: the key of the frame cache."""

    path: str
    index: int
    """0-based frame index within the file."""
    slope: float = 1.0
    intercept: float = 0.0
    deflated: bool = False


@dataclass(frozen=True)
class Plane:
    instance: Instance
    index: int
    info: FrameInfo

    @property
    def placed(self) -> bool:
        return bool(self.info.position and self.info.orientation)

    @property
    def frame(self) -> Frame:
        return Frame(self.instance.path, self.index, self.info.slope, self.info.intercept, self.instance.deflated)

    def __str__(self) -> str:
        return self.instance.path + (f" frame {self.index + 1}" if self.instance.number_of_frames > 1 else "")


class StackLayout:
    """Planes of ``rows x columns`` pixels, one frame each."""

    kind = "stack"

    def __init__(self, instances: list[Instance], path: str):
        _check_uniform(instances)
        planes = [Plane(i, k, info) for i in instances for k, info in enumerate(i.frames)]
        self.warnings: list[str] = []
        self.order: StackOrder | None = None
        self.orientation = None
        placed = [p for p in planes if p.placed]
        if placed and len(placed) < len(planes):
            unplaced = next(p for p in planes if not p.placed)
            raise TilepipeError(f"{unplaced}: has no ImagePositionPatient/ImageOrientationPatient while other "
                                f"frames of the series do; cannot order the stack")
        if placed:
            planes = self._order(planes, path)
        elif len(planes) > 1:
            planes.sort(key=lambda p: (p.instance.instance_number or 0, p.instance.path, p.index))
            self.warnings.append(f"{path}: no ImagePositionPatient on any frame; {len(planes)} planes kept in "
                                 f"InstanceNumber and frame order")
        self.planes = tuple(planes)
        first = instances[0]
        self.height, self.width, self.depth = first.rows, first.columns, len(self.planes)

    def _order(self, planes: list[Plane], path: str) -> list[Plane]:
        orientations = distinct_orientations([p.info.orientation for p in planes])
        if len(orientations) > 1:
            odd = next(p for p in planes if not same_orientation(orientations[0], p.info.orientation))
            raise TilepipeError(f"{path}: the series mixes {len(orientations)} slice orientations "
                                f"(e.g. {planes[0]} vs {odd}), a localizer or a reformat? It cannot be one volume")
        self.orientation = orientations[0]
        try:
            self.order = order_stack([p.info.position for p in planes], self.orientation)
        except ValueError as exc:
            raise TilepipeError(f"{planes[0]}: {exc}") from None
        if self.order.duplicates:
            a, b = self.order.duplicates[0]
            raise TilepipeError(f"{planes[a]} and {planes[b]}: the same slice position ({len(self.order.duplicates)} "
                                f"duplicate position(s) in the series: several echoes, phases or acquisitions?); "
                                f"split the series before segmenting it")
        ordered = [planes[i] for i in self.order.order]
        for gap in self.order.gaps:
            low, high = self.order.locations[gap.after], self.order.locations[gap.after + 1]
            self.warnings.append(
                f"{path}: about {gap.missing} slice(s) missing between {ordered[gap.after]} and "
                f"{ordered[gap.after + 1]} (step {gap.step:.3g} mm from {low:.3g} to {high:.3g} mm, "
                f"median spacing {self.order.median_spacing:.3g} mm)")
        return ordered

    def frames_under(self, window: Window, plane: int | None) -> list[tuple[Frame, Window]]:
        return [(self.planes[plane or 0].frame, Window(0, 0, self.height, self.width))]

    def sample_frames(self, count: int) -> list[Frame]:
        """Up to ``count`` frames spread evenly through the stack, for statistics."""
        step = max(1, len(self.planes) // count)
        return [p.frame for p in self.planes[::step][:count]]

    @property
    def instances(self) -> list[Instance]:
        return list({p.instance.path: p.instance for p in self.planes}.values())

    @property
    def file_windows(self) -> list[tuple[float, float] | None]:
        return [p.info.window for p in self.planes]

    def geometry(self) -> dict:
        spacing = self.planes[0].info.pixel_spacing
        geometry = {
            "pixel_spacing": list(spacing) if spacing else None,
            "slice_thickness": self.planes[0].instance.slice_thickness,
            "image_orientation_patient": list(self.orientation) if self.orientation else None,
            "sop_instance_uids": [p.instance.sop_instance_uid for p in self.planes],
            "source_files": [p.instance.path for p in self.planes],
            "frame_numbers": [p.index + 1 for p in self.planes],
        }
        if self.order is None:
            return {**geometry, "slice_positions": None}
        median = self.order.median_spacing
        geometry.update({
            "slice_positions": [list(p.info.position) for p in self.planes],
            "slice_normal": slice_normal(self.orientation).tolist(),
            "slice_locations": list(self.order.locations),
            "slice_spacings": list(self.order.spacings),
            "slice_spacing": median,
            "origin": list(self.planes[0].info.position),
        })
        if spacing:
            geometry["affine"] = stack_affine(self.planes[0].info.position, self.orientation, spacing,
                                              median or self.planes[0].instance.slice_thickness or 1.0)
        return geometry

    def describe(self) -> dict:
        return {"slice_count": self.depth, "layout": f"{self.depth} plane(s) of {self.width}x{self.height} px"}


def _check_uniform(instances: list[Instance]) -> None:
    """Every frame must share one size and one pixel format to be stacked."""
    first = instances[0]
    for i in instances:
        if len(i.frames) != i.number_of_frames:
            raise TilepipeError(f"{i.path}: {i.number_of_frames} frames but {len(i.frames)} per-frame functional groups")
        for what, a, b in (("rows x columns", (first.rows, first.columns), (i.rows, i.columns)),
                           ("samples per pixel", first.samples, i.samples),
                           ("photometric interpretation", first.photometric, i.photometric)):
            if a != b:
                raise TilepipeError(f"{i.path}: {what} {b} differs from {a} in {first.path}; "
                                    f"the series cannot be stacked into one volume")
