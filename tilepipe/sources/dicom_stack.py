"""A series of slices, or a multi-frame image, as a stack of planes in patient-geometry order.

Every frame of every instance of the series becomes one plane. When all frames are placed
(ImagePositionPatient and ImageOrientationPatient, or the enhanced functional groups), they are
ordered along the slice normal (:mod:`.dicom_geometry`); a stack that cannot be one volume (mixed
orientations, differing sizes) is refused, a stack with missing slices is kept with a warning, its
real positions recorded and no affine. Positions that repeat make several volumes when the frames
say why (:mod:`.dicom_volumes`), and are refused when they do not. Frames with no position at all (secondary capture,
ultrasound cine) keep InstanceNumber and frame order, which is all the files say about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import TilepipeError
from ..grid import Window
from .dicom_header import FrameInfo, Instance
from .dicom_geometry import (
    STEP_TOLERANCE,
    SliceSteps,
    StackOrder,
    distinct_orientations,
    order_stack,
    same_orientation,
    slice_normal,
    slice_steps,
    stack_affine,
)
from .dicom_labels import VOLUME_LABELS
from .dicom_volumes import describe_labels, select_frames, split_volumes

OME_Z_INDEX = ("OME-NGFF readers (napari, ome-zarr) get y and x in mm but z as the slice index with no unit, "
               "since one z spacing would misplace these slices")
"""What the store's OME-NGFF description holds for a stack without one slice step (:mod:`tilepipe.ngff`)."""


@dataclass(frozen=True)
class Frame:
    """One decodable frame and its calibration: the key of the frame cache."""

    path: str
    index: int
    """0-based frame index within the file."""
    slope: float = 1.0
    intercept: float = 0.0


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
        return Frame(self.instance.path, self.index, self.info.slope, self.info.intercept)

    def __str__(self) -> str:
        return self.instance.path + (f" frame {self.index + 1}" if self.instance.number_of_frames > 1 else "")


@dataclass(frozen=True)
class Volume:
    """One volume of a stack: its planes in slice order, where they sit and what labels it."""

    planes: tuple[Plane, ...]
    order: StackOrder
    steps: SliceSteps
    labels: dict = field(default_factory=dict)
    """The values that tell this volume from the others (empty for a single volume)."""

    def positions(self) -> list[list[float]]:
        return [list(p.info.position) for p in self.planes]


class StackLayout:
    """Planes of ``rows x columns`` pixels, one frame each: one volume, or several volumes of the
    same slice count when positions repeat for a reason the frames state (then planes run
    volume-major: plane ``v * slices + z``)."""

    kind = "stack"

    def __init__(self, instances: list[Instance], path: str, select: str | None = None):
        _check_uniform(instances)
        planes = [Plane(i, k, info) for i in instances for k, info in enumerate(i.frames)]
        if select:
            planes = [planes[i] for i in select_frames([dict(p.info.labels) for p in planes], select, path)]
        self.warnings: list[str] = []
        self.volumes: tuple[Volume, ...] = ()
        self.orientation = None
        placed = [p for p in planes if p.placed]
        if placed and len(placed) < len(planes):
            unplaced = next(p for p in planes if not p.placed)
            raise TilepipeError(f"{unplaced}: has no ImagePositionPatient/ImageOrientationPatient while other "
                                f"frames of the series do; cannot order the stack")
        if placed:
            self.volumes = self._volumes(planes, path)
            planes = [p for v in self.volumes for p in v.planes]
            self._affine_warnings(path)
        elif len(planes) > 1:
            planes.sort(key=lambda p: (p.instance.instance_number or 0, p.instance.path, p.index))
            self.warnings.append(f"{path}: no ImagePositionPatient on any frame; {len(planes)} planes kept in "
                                 f"InstanceNumber and frame order")
        self.planes = tuple(planes)
        first = instances[0]
        self.height, self.width, self.depth = first.rows, first.columns, len(self.planes)

    @property
    def order(self) -> StackOrder | None:
        """The slice order of the (first) volume: its positions along the normal are the z axis."""
        return self.volumes[0].order if self.volumes else None

    @property
    def volume_count(self) -> int | None:
        """Volumes of a 4-D series; None for one volume."""
        return len(self.volumes) if len(self.volumes) > 1 else None

    def _volumes(self, planes: list[Plane], path: str) -> tuple[Volume, ...]:
        orientations = distinct_orientations([p.info.orientation for p in planes])
        if len(orientations) > 1:
            odd = next(p for p in planes if not same_orientation(orientations[0], p.info.orientation))
            raise TilepipeError(f"{path}: the series mixes {len(orientations)} slice orientations "
                                f"(e.g. {planes[0]} vs {odd}), a localizer or a reformat? It cannot be one volume")
        self.orientation = orientations[0]
        try:
            order = order_stack([p.info.position for p in planes], self.orientation)
        except ValueError as exc:
            raise TilepipeError(f"{planes[0]}: {exc}") from None
        if not order.duplicates:
            return (self._volume(planes, {}, path),)
        locations = np.asarray([p.info.position for p in planes], float) @ slice_normal(self.orientation)
        split = split_volumes([dict(p.info.labels) for p in planes], locations)
        if split is None:
            a, b = order.duplicates[0]
            raise TilepipeError(f"{planes[a]} and {planes[b]}: the same slice position ({len(order.duplicates)} "
                                f"duplicate position(s) in the series) and no attribute tells them apart (looked at "
                                f"{', '.join(VOLUME_LABELS)} and enhanced dimension indices); split the series "
                                f"before segmenting it")
        if not split.even:
            counts = ", ".join(f"{len(m)} ({describe_labels(v)})" for m, v in zip(split.members, split.labels))
            example = "=".join(map(str, next(iter(split.labels[0].items()))))
            raise TilepipeError(f"{path}: its frames make volumes by {', '.join(split.keys)}, but of different slice "
                                f"counts: {counts}; segment one at a time with --select (e.g. --select {example})")
        return tuple(self._volume([planes[i] for i in members], labels, path)
                     for members, labels in zip(split.members, split.labels))

    def _volume(self, planes: list[Plane], labels: dict, path: str) -> Volume:
        order = order_stack([p.info.position for p in planes], self.orientation)
        ordered = tuple(planes[i] for i in order.order)
        where = f"{path} ({describe_labels(labels)})" if labels else path
        for gap in order.gaps:
            low, high = order.locations[gap.after], order.locations[gap.after + 1]
            self.warnings.append(
                f"{where}: about {gap.missing} slice(s) missing between {ordered[gap.after]} and "
                f"{ordered[gap.after + 1]} (step {gap.step:.3g} mm from {low:.3g} to {high:.3g} mm, "
                f"{gap.step / gap.spacing:.2g} times the {gap.spacing:.3g} mm spacing around it)")
        return Volume(ordered, order, slice_steps([p.info.position for p in ordered], self.orientation), labels)

    def _affine_warnings(self, path: str) -> None:
        """Warn when no affine can be written, and state a gantry tilt (a regular tilted stack's
        affine is sheared)."""
        first = self.volumes[0]
        irregular = next((v for v in self.volumes if v.steps.irregular), None)
        moved = [v for v in self.volumes[1:] if not np.allclose(v.positions(), first.positions(),
                                                                atol=STEP_TOLERANCE * max(first.order.median_spacing or 1, 1e-3))]
        if irregular is not None:
            where = f"{path} ({describe_labels(irregular.labels)})" if irregular.labels else path
            self.warnings.append(f"{where}: no affine written, the slices are not regularly spaced "
                                 f"({irregular.steps.irregular}); each slice's ImagePositionPatient is kept "
                                 f"in attrs dicom.slice_positions. {OME_Z_INDEX}")
        elif moved:
            self.warnings.append(f"{path}: no affine written, volume {self.volumes.index(moved[0])} "
                                 f"({describe_labels(moved[0].labels)}) sits elsewhere than volume 0; each volume's "
                                 f"slice positions are kept in attrs dicom.volumes. {OME_Z_INDEX}")
            self.volumes = tuple(replace(v, steps=replace(v.steps, step=None, irregular="the volumes sit at "
                                                          "different positions")) for v in self.volumes)
        first = self.volumes[0]
        if first.steps.tilt_degrees:
            tag = first.planes[0].instance.gantry_tilt
            stated = f", GantryDetectorTilt {tag:g} deg" if tag is not None else ""
            sheared = (", so the affine's slice column is that real, sheared step, which tools needing an "
                       "orthogonal affine (NIfTI qform, ITK) cannot hold") if first.steps.step else ""
            self.warnings.append(f"{path}: gantry tilt {first.steps.tilt_degrees:.2f} deg: the slice origins step "
                                 f"that far off the slice normal{stated}{sheared}")

    def frames_under(self, window: Window, plane: int | None) -> list[tuple[Frame, Window]]:
        return [(self.planes[plane or 0].frame, Window(0, 0, self.height, self.width))]

    def sample_frames(self, count: int, volume: int | None = None) -> list[Frame]:
        """Up to ``count`` frames spread evenly through the stack (or one of its volumes), for statistics."""
        planes = self.planes if volume is None else self.volumes[volume].planes
        step = max(1, len(planes) // count)
        return [p.frame for p in planes[::step][:count]]

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
        if not self.volumes:
            return {**geometry, "slice_positions": None}
        first = self.volumes[0]
        median = first.order.median_spacing
        normal = slice_normal(self.orientation)
        geometry.update({
            "slice_positions": first.positions(),
            "slice_normal": normal.tolist(),
            "slice_locations": list(first.order.locations),
            "slice_spacings": list(first.order.spacings),
            "slice_spacing": median,
            "slice_step": list(first.steps.step) if first.steps.step else None,
            "irregular_slices": first.steps.irregular,
            "gantry_tilt_degrees": first.steps.tilt_degrees,
            "gantry_detector_tilt": first.planes[0].instance.gantry_tilt,
            "origin": first.positions()[0],
        })
        if self.volume_count:
            geometry["volumes"] = [{"labels": v.labels, "slice_positions": v.positions()} for v in self.volumes]
        if spacing:
            single = normal * (first.planes[0].instance.slice_thickness or 1.0) if len(first.planes) == 1 else None
            step = first.steps.step if single is None else single
            geometry["affine"] = (stack_affine(first.positions()[0], self.orientation, spacing, step)
                                  if step is not None else None)
        return geometry

    def describe(self) -> dict:
        described = {"slice_count": self.depth, "layout": f"{self.depth} plane(s) of {self.width}x{self.height} px"}
        if self.volume_count:
            slices = self.depth // self.volume_count
            described["layout"] = (f"{self.volume_count} volumes of {slices} plane(s) of {self.width}x{self.height} px, "
                                   f"told apart by " + "; ".join(describe_labels(v.labels) for v in self.volumes))
            described["volumes"] = [v.labels for v in self.volumes]
        if self.volumes:
            described["gantry_tilt_degrees"] = self.volumes[0].steps.tilt_degrees
            described["slice_geometry"] = self.volumes[0].steps.irregular or "regular"
        return described


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
