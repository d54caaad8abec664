"""The header model: one DICOM file read up to, never into, its pixel data.

What the pipeline needs is copied into a small frozen :class:`Instance` (with a :class:`FrameInfo`
per frame, or a :class:`SlideInfo` for a whole-slide level) and the pydicom dataset is dropped at
once, so a 1,000-slice series costs kilobytes per slice, not a parsed header each.
:func:`read_header` sorts a file into an image (pixel data present) or a :class:`Skipped` file: not
DICOM, DICOM without pixel data such as SR or a DICOMDIR, or broken (an image whose header is
unreadable or stops before its pixel data: a truncated download). Finding the files and grouping
them into series is :mod:`.dicom_files`' job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..errors import first_line
from .dicom_labels import classic_labels, enhanced_labels, volume_dimensions

PIXEL_KEYWORDS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
"""The pixel data elements by tag: where pydicom stops a header read, and where a frame reader
finds the pixels."""
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "PR", "KO"}
"""Objects that may carry pixel data but are labels or documents, not images to segment."""
PREAMBLE = 128


@dataclass(frozen=True)
class FrameInfo:
    """What places and calibrates one frame (a slice of a series, or a frame of a multi-frame)."""

    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, float] | None = None
    slope: float = 1.0
    intercept: float = 0.0
    window: tuple[float, float] | None = None
    """The file's first VOI window (center, width), if any."""
    labels: tuple[tuple[str, object], ...] = ()
    """``(keyword, value)`` of what may tell this frame apart from another at the same position
    (echo, time point, b-value, acquisition; :mod:`.dicom_labels`), in the order
    :mod:`.dicom_volumes` tries them."""


@dataclass(frozen=True)
class SlideInfo:
    """Whole-slide facts: the level's total pixel matrix and where it sits on the slide."""

    total_rows: int
    total_columns: int
    organization: str
    image_type: tuple[str, ...]
    pixel_spacing: tuple[float, float] | None
    orientation: tuple[float, ...] | None
    origin: tuple[float, float] | None


@dataclass(frozen=True)
class Instance:
    """One DICOM file with pixel data, reduced to the facts the pipeline uses."""

    path: str
    pixel_offset: int
    """File offset of the pixel data element's tag (for the truncation check)."""
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str | None
    series_description: str
    series_number: int | None
    modality: str
    instance_number: int | None
    transfer_syntax: str
    rows: int
    columns: int
    samples: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    number_of_frames: int
    slice_thickness: float | None
    gantry_tilt: float | None
    """GantryDetectorTilt in degrees, as the file states it (CT)."""
    frames: tuple[FrameInfo, ...] = ()
    """One per frame for images of a stack; empty for a whole-slide level (its frames are tiles)."""
    slide: SlideInfo | None = None

    @property
    def is_slide(self) -> bool:
        return self.slide is not None

    @property
    def deflated(self) -> bool:
        """Deflated files must be inflated whole to reach any frame."""
        return self.transfer_syntax == DeflatedExplicitVRLittleEndian

    @property
    def sop_class_name(self) -> str:
        return UID(self.sop_class_uid).name


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    series_uid: str | None = None
    broken: bool = False
    """An image that cannot be used, rather than a file that is simply not an image."""


def has_preamble(path: Path) -> bool:
    """Whether ``path`` starts with the 128-byte preamble and ``DICM``, as DICOM Part 10 files do."""
    try:
        with path.open("rb") as f:
            head = f.read(PREAMBLE + 4)
    except OSError:
        return False
    return head[PREAMBLE:] == b"DICM"


def read_header(path: Path) -> Instance | Skipped:
    """Read ``path`` up to its pixel data and classify it."""
    if not has_preamble(path):
        return Skipped(str(path), "not DICOM")
    try:
        with path.open("rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            pixel_offset = f.tell()
            tag = f.read(4)
    except Exception as exc:  # a damaged header raises anything from struct.error to KeyError
        return Skipped(str(path), f"unreadable DICOM header ({first_line(exc)})", broken=True)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        # the file position is in the deflated stream: look at the inflated dataset instead (rare, small files)
        has_pixels = any(k in pydicom.dcmread(path) for k in PIXEL_KEYWORDS.values())
    else:
        has_pixels = len(tag) == 4 and _tag_value(tag, ds) in PIXEL_KEYWORDS
    sop_class = str(ds.get("SOPClassUID", ""))
    series = str(ds.get("SeriesInstanceUID", "")) or None
    name = UID(sop_class).name if sop_class else "no SOP Class UID"
    if not has_pixels:
        if "Image Storage" in name or "Rows" in ds:
            return Skipped(str(path), f"a {name} instance without pixel data: the file looks truncated", series, True)
        return Skipped(str(path), f"no pixel data ({name})", series)
    if str(ds.get("Modality", "")) in NON_IMAGE_MODALITIES:
        return Skipped(str(path), f"not an image to segment ({name})", series)
    try:
        return _instance(path, ds, pixel_offset)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return Skipped(str(path), f"a damaged image header ({first_line(exc)})", series, True)


def _tag_value(raw: bytes, ds) -> int:
    little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
    group = int.from_bytes(raw[:2], "little" if little else "big")
    element = int.from_bytes(raw[2:4], "little" if little else "big")
    return group << 16 | element


def _instance(path: Path, ds, pixel_offset: int) -> Instance:
    frames = int(ds.get("NumberOfFrames") or 1)
    slide = _slide(ds) if str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS else None
    thickness = _floats(ds.get("SliceThickness"), 1)
    return Instance(
        path=os.path.abspath(path),
        pixel_offset=pixel_offset,
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
        series_description=str(ds.get("SeriesDescription", "")),
        series_number=_int(ds.get("SeriesNumber")),
        modality=str(ds.get("Modality", "")),
        instance_number=_int(ds.get("InstanceNumber")),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples=int(ds.get("SamplesPerPixel") or 1),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        bits_allocated=int(ds.BitsAllocated),
        bits_stored=int(ds.get("BitsStored") or ds.BitsAllocated),
        signed=bool(ds.get("PixelRepresentation", 0)),
        number_of_frames=frames,
        slice_thickness=thickness[0] if thickness else None,
        gantry_tilt=tilt[0] if (tilt := _floats(ds.get("GantryDetectorTilt"), 1)) else None,
        frames=() if slide else _frames(ds, frames),
        slide=slide,
    )


def _frames(ds, count: int) -> tuple[FrameInfo, ...]:
    """Per-frame geometry and calibration: the functional groups of an enhanced multi-frame
    (per-frame values over shared ones), else the classic top-level attributes.

    A classic multi-frame (ultrasound, NM) has one ImagePositionPatient for all its frames, which
    places none of them, so its frames get no position."""
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    base = _classic_frame(ds) if shared is None else _grouped_frame(shared, _classic_frame(ds))
    if per_frame:
        dimensions = volume_dimensions(ds)
        frames = []
        for item in per_frame:
            frame = _grouped_frame(item, base)
            frames.append(replace(frame, labels=enhanced_labels(item, shared, dimensions) or frame.labels))
        return tuple(frames)
    if shared is None and count > 1:
        base = replace(base, position=None)
    return (base,) * count


def _classic_frame(ds) -> FrameInfo:
    slope, intercept = _floats(ds.get("RescaleSlope"), 1), _floats(ds.get("RescaleIntercept"), 1)
    return FrameInfo(
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        slope=slope[0] if slope else 1.0,
        intercept=intercept[0] if intercept else 0.0,
        window=_window(ds),
        labels=classic_labels(ds),
    )


def _grouped_frame(groups, base: FrameInfo) -> FrameInfo:
    """One functional-groups item's macros, falling back to ``base`` for what it lacks."""
    slope = _floats(_attr(groups, "PixelValueTransformationSequence", "RescaleSlope"), 1)
    intercept = _floats(_attr(groups, "PixelValueTransformationSequence", "RescaleIntercept"), 1)
    return FrameInfo(
        position=_floats(_attr(groups, "PlanePositionSequence", "ImagePositionPatient"), 3) or base.position,
        orientation=_floats(_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6) or base.orientation,
        pixel_spacing=_floats(_attr(groups, "PixelMeasuresSequence", "PixelSpacing"), 2) or base.pixel_spacing,
        slope=slope[0] if slope else base.slope,
        intercept=intercept[0] if intercept else base.intercept,
        window=_window(_first_item(groups.get("FrameVOILUTSequence"))) or base.window,
    )


def _slide(ds) -> SlideInfo:
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    origin = _first_item(ds.get("TotalPixelMatrixOriginSequence"))
    return SlideInfo(
        total_rows=int(ds.get("TotalPixelMatrixRows") or ds.Rows),
        total_columns=int(ds.get("TotalPixelMatrixColumns") or ds.Columns),
        organization=str(ds.get("DimensionOrganizationType", "")),
        image_type=tuple(str(v) for v in (ds.get("ImageType") or ())),
        pixel_spacing=_floats(_attr(shared, "PixelMeasuresSequence", "PixelSpacing"), 2),
        orientation=_floats(ds.get("ImageOrientationSlide"), 6),
        origin=(_floats([origin.get("XOffsetInSlideCoordinateSystem"), origin.get("YOffsetInSlideCoordinateSystem")], 2)
                if origin is not None else None),
    )


def _first_item(sequence):
    return sequence[0] if sequence else None


def _attr(groups, sequence: str, keyword: str):
    item = _first_item(groups.get(sequence)) if groups is not None else None
    return item.get(keyword) if item is not None else None


def _window(ds) -> tuple[float, float] | None:
    if ds is None:
        return None
    center, width = _floats(ds.get("WindowCenter"), None), _floats(ds.get("WindowWidth"), None)
    if not center or not width or width[0] <= 0:
        return None
    return center[0], width[0]


def _floats(value, count: int | None) -> tuple[float, ...] | None:
    """``value`` (a DS/FD, or a list of them) as floats; None when absent, empty or malformed."""
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if count is not None and len(floats) != count:
        return None
    return floats


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
