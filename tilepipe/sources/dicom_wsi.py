"""Whole-slide DICOM (VL Whole Slide Microscopy): one pyramid level as the image plane, by tiles.

A TILED_FULL level stores its total pixel matrix as frames of Rows x Columns pixels in row-major
order (the last row and column of frames padded past the matrix), so the frames under a window
follow from arithmetic alone: a block decodes only those frames, and no code path asks for the whole
level, which for a real slide is gigabytes. Any other level (TILED_SPARSE, or one that does not
state its DimensionOrganizationType) may hold its frames in any order, some left out where the
slide is empty: each frame is placed where its per-frame PlanePositionSlideSequence says
(:class:`PlacedTiles`), what no frame covers is no-data, and a level without those positions is
refused rather than read as if TILED_FULL. Levels are the VOLUME (and THUMBNAIL) instances of the
series, sorted by total pixel matrix, largest first: ``--level 0`` is full resolution. LABEL and
OVERVIEW images are photographs of the glass, not pyramid levels, and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom

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

    @property
    def frame_indices(self) -> range:
        return range(self.frame_count)

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


@dataclass(frozen=True)
class PlacedTiles:
    """Frames at their own places in the total pixel matrix: ``frames[k]`` (0-based frame index)
    has its top-left pixel at row ``rows[k]``, column ``columns[k]`` (0-based)."""

    total_rows: int
    total_columns: int
    frame_rows: int
    frame_columns: int
    frames: tuple[int, ...]
    rows: tuple[int, ...]
    columns: tuple[int, ...]

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    @property
    def frame_indices(self) -> tuple[int, ...]:
        return self.frames

    def frames_under(self, window: Window) -> list[tuple[int, Window]]:
        """``(frame index, the frame's part of the matrix)`` for every frame that meets ``window``;
        a part starts at its frame's corner and stops at the matrix's bottom and right edges."""
        rows, cols = np.asarray(self.rows), np.asarray(self.columns)
        meets = ((rows < window.row_stop) & (rows + self.frame_rows > window.row) & (rows < self.total_rows)
                 & (cols < window.col_stop) & (cols + self.frame_columns > window.col) & (cols < self.total_columns))
        return [(self.frames[k], Window(self.rows[k], self.columns[k], min(self.frame_rows, self.total_rows - self.rows[k]),
                                        min(self.frame_columns, self.total_columns - self.columns[k])))
                for k in np.flatnonzero(meets)]


def frame_positions(path: str, count: int) -> list[tuple[int, int]] | None:
    """Each frame's (row, column) in the total pixel matrix, 0-based, from the per-frame
    PlanePositionSlideSequence (DICOM's are 1-based); None unless every one of ``count`` frames
    states both."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PerFrameFunctionalGroupsSequence"])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    found = []
    for item in per_frame:
        plane = item.get("PlanePositionSlideSequence")
        row = plane[0].get("RowPositionInTotalImagePixelMatrix") if plane else None
        col = plane[0].get("ColumnPositionInTotalImagePixelMatrix") if plane else None
        if row is None or col is None:
            return None
        found.append((int(row) - 1, int(col) - 1))
    return found if len(found) == count else None


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
        self.tiles = self._full() if slide.organization == "TILED_FULL" else self._placed()
        self.height, self.width = slide.total_rows, slide.total_columns

    def _full(self) -> TileLayout:
        instance, slide = self.instance, self.instance.slide
        tiles = TileLayout(slide.total_rows, slide.total_columns, instance.rows, instance.columns)
        if instance.number_of_frames < tiles.frame_count or instance.number_of_frames % tiles.frame_count:
            raise TilepipeError(f"{instance.path}: {instance.number_of_frames} frames do not tile a "
                                f"{slide.total_columns}x{slide.total_rows} matrix in {instance.columns}x{instance.rows} "
                                f"frames ({tiles.frame_count} expected); not TILED_FULL")
        if instance.number_of_frames > tiles.frame_count:
            self.warnings.append(f"{instance.path}: {instance.number_of_frames // tiles.frame_count} focal planes "
                                 f"or optical paths; using the first")
        return tiles

    def _placed(self) -> PlacedTiles:
        """The frames of a level that is not TILED_FULL, each at its stated position; where two
        frames share a position (focal planes, optical paths) the first is used."""
        instance, slide = self.instance, self.instance.slide
        organization = slide.organization or "unstated (no DimensionOrganizationType)"
        positions = frame_positions(instance.path, instance.number_of_frames)
        if positions is None:
            raise TilepipeError(f"{instance.path}: frames organised as {organization} and not every frame states "
                                f"its place (PerFrameFunctionalGroupsSequence > PlanePositionSlideSequence); "
                                f"cannot place them, and only TILED_FULL can be read without")
        first: dict[tuple[int, int], int] = {}
        for index, position in enumerate(positions):
            first.setdefault(position, index)
        if len(first) < len(positions):
            self.warnings.append(f"{instance.path}: {len(positions) - len(first)} frame(s) at a position another "
                                 f"frame already holds (focal planes or optical paths); using the first at each")
        frames = sorted(first.values())
        return PlacedTiles(slide.total_rows, slide.total_columns, instance.rows, instance.columns, tuple(frames),
                           tuple(positions[i][0] for i in frames), tuple(positions[i][1] for i in frames))

    @property
    def organization(self) -> str:
        """How the level's frames are laid out: TILED_FULL, or placed by their positions."""
        if isinstance(self.tiles, TileLayout):
            return "TILED_FULL"
        return f"{self.instance.slide.organization or 'no DimensionOrganizationType'}, placed by per-frame positions"

    def _frame(self, index: int) -> Frame:
        return Frame(self.instance.path, index)

    def frames_under(self, window: Window, plane: int | None) -> list[tuple[Frame, Window]]:
        return [(self._frame(index), part) for index, part in self.tiles.frames_under(window)]

    def sample_frames(self, count: int) -> list[Frame]:
        step = max(1, self.tiles.frame_count // count)
        return [self._frame(i) for i in self.tiles.frame_indices[::step][:count]]

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
            "frame_organization": self.organization,
        }

    def describe(self) -> dict:
        return {
            "slice_count": 1,
            "level": self.level,
            "level_count": len(self.level_shapes),
            "layout": f"{self.organization}, {self.tiles.frame_count} frames of {self.instance.columns}x"
                      f"{self.instance.rows} px",
        }
