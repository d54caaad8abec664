"""Whole-slide DICOM (VL Whole Slide Microscopy): one pyramid level as the image plane, by tiles.

A TILED_FULL level stores its total pixel matrix as frames of Rows x Columns pixels in row-major
order (the last row and column of frames padded past the matrix), so the frames under a window
follow from arithmetic alone: a block decodes only those frames, and no code path asks for the whole
level, which for a real slide is gigabytes. Levels are the VOLUME (and THUMBNAIL) instances of the
series, sorted by total pixel matrix, largest first: ``--level 0`` is full resolution. LABEL and
OVERVIEW images are photographs of the glass, not pyramid levels, and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TilepipeError
from ..grid import Window
from .dicom_header import Instance
from .dicom_stack import Frame

PYRAMID_IMAGE_TYPES = ("VOLUME", "THUMBNAIL")


@dataclass(frozen=True)
class TileLayout:
    """Where each frame of a TILED_FULL level sits in its total pixel matrix."""

    total_rows: int
    total_columns: int
    frame_rows: int
    frame_columns: int

    @property
    def frames_across(self) -> int:
        return -(-self.total_columns // self.frame_columns)

    @property
    def frames_down(self) -> int:
        return -(-self.total_rows // self.frame_rows)

    @property
    def frame_count(self) -> int:
        return self.frames_across * self.frames_down

    def frames_under(self, window: Window) -> list[tuple[int, Window]]:
        """``(frame index, the frame's part of the matrix)`` for every frame that meets ``window``;
        the parts are clipped to the matrix (frame padding is never read into the image)."""
        inside = window.intersection(Window(0, 0, self.total_rows, self.total_columns))
        if inside is None:
            return []
        fr, fc = self.frame_rows, self.frame_columns
        found = []
        for r in range(inside.row // fr, (inside.row_stop - 1) // fr + 1):
            for c in range(inside.col // fc, (inside.col_stop - 1) // fc + 1):
                part = Window(r * fr, c * fc, min(fr, self.total_rows - r * fr), min(fc, self.total_columns - c * fc))
                found.append((r * self.frames_across + c, part))
        return found


def pyramid_levels(instances: list[Instance]) -> list[list[Instance]]:
    """The series' pyramid, largest level first; each level lists its instance(s)."""
    levels: dict[tuple[int, int], list[Instance]] = {}
    for i in instances:
        kind = i.slide.image_type[2] if len(i.slide.image_type) > 2 else "VOLUME"
        if kind in PYRAMID_IMAGE_TYPES:
            levels.setdefault((i.slide.total_rows, i.slide.total_columns), []).append(i)
    return [levels[k] for k in sorted(levels, key=lambda k: -k[0] * k[1])]


class SlideLayout:
    """One pyramid level of a whole-slide series: a single 2-D plane read tile by tile."""

    kind = "whole-slide"
    depth = None

    def __init__(self, instances: list[Instance], level: int, path: str):
        levels = pyramid_levels(instances)
        if not levels:
            raise TilepipeError(f"{path}: a whole-slide series with no VOLUME image (only label or overview images)")
        if not 0 <= level < len(levels):
            listing = ", ".join(f"{n}: {lv[0].slide.total_columns}x{lv[0].slide.total_rows}" for n, lv in enumerate(levels))
            raise TilepipeError(f"--level {level}: the slide has {len(levels)} level(s) ({listing})")
        self.warnings: list[str] = []
        chosen = sorted(levels[level], key=lambda i: (i.instance_number or 0, i.path))
        if len(chosen) > 1:
            self.warnings.append(f"{path}: level {level} has {len(chosen)} instances (focal planes, optical paths or "
                                 f"concatenations); using {chosen[0].path} only")
        self.instance = instance = chosen[0]
        self.level = level
        self.level_shapes = tuple((lv[0].slide.total_rows, lv[0].slide.total_columns) for lv in levels)
        """(rows, columns) of every level, largest first."""
        slide = instance.slide
        if slide.organization not in ("TILED_FULL", ""):
            raise TilepipeError(f"{instance.path}: frames organised as {slide.organization}; only TILED_FULL "
                                f"(frames filling the matrix row by row) is supported")
        self.tiles = TileLayout(slide.total_rows, slide.total_columns, instance.rows, instance.columns)
        if instance.number_of_frames < self.tiles.frame_count or instance.number_of_frames % self.tiles.frame_count:
            raise TilepipeError(f"{instance.path}: {instance.number_of_frames} frames do not tile a "
                                f"{slide.total_columns}x{slide.total_rows} matrix in {instance.columns}x{instance.rows} "
                                f"frames ({self.tiles.frame_count} expected); not TILED_FULL")
        if instance.number_of_frames > self.tiles.frame_count:
            self.warnings.append(f"{instance.path}: {instance.number_of_frames // self.tiles.frame_count} focal planes "
                                 f"or optical paths; using the first")
        self.height, self.width = slide.total_rows, slide.total_columns

    def _frame(self, index: int) -> Frame:
        return Frame(self.instance.path, index)

    def frames_under(self, window: Window, plane: int | None) -> list[tuple[Frame, Window]]:
        return [(self._frame(index), part) for index, part in self.tiles.frames_under(window)]

    def sample_frames(self, count: int) -> list[Frame]:
        step = max(1, self.tiles.frame_count // count)
        return [self._frame(i) for i in range(0, self.tiles.frame_count, step)][:count]

    @property
    def instances(self) -> list[Instance]:
        return [self.instance]

    @property
    def file_windows(self) -> list[tuple[float, float] | None]:
        return []

    def geometry(self) -> dict:
        slide = self.instance.slide
        return {
            "level": self.level,
            "level_count": len(self.level_shapes),
            "total_pixel_matrix": [slide.total_rows, slide.total_columns],
            "frame_size": [self.instance.rows, self.instance.columns],
            "pixel_spacing": list(slide.pixel_spacing) if slide.pixel_spacing else None,
            "image_orientation_slide": list(slide.orientation) if slide.orientation else None,
            "origin": list(slide.origin) if slide.origin else None,
            "sop_instance_uids": [self.instance.sop_instance_uid],
            "source_files": [self.instance.path],
            "frame_numbers": None,
        }

    def describe(self) -> dict:
        return {
            "slice_count": 1,
            "level": self.level,
            "level_count": len(self.level_shapes),
            "layout": f"TILED_FULL, {self.tiles.frame_count} frames of {self.instance.columns}x{self.instance.rows} px",
        }
