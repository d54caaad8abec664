"""DICOM files for tests: the real samples beside the repo, shuffled copies of them, and enhanced
multi-frame variants with the functional groups real scanners write. Synthetic CT series come from
:mod:`tilepipe.testing`, which the benchmarks share."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from tests.conftest import shared_file


def dicom_data(*parts: str) -> Path:
    """A real DICOM sample under ``tests/data/dicom``; a missing one fails the test."""
    return shared_file("dicom", *parts)


def shuffled_copy(source: Path, target: Path, seed: int = 0, nested: bool = True) -> list[Path]:
    """Copy every file of ``source`` under meaningless random names (some in sub-folders), so that
    neither file names nor directory order say anything about slice order."""
    rng = random.Random(seed)
    files = sorted(p for p in source.iterdir() if p.is_file())
    rng.shuffle(files)
    copies = []
    for n, f in enumerate(files):
        folder = target / (f"sub{n % 3}" if nested else "")
        folder.mkdir(parents=True, exist_ok=True)
        copies.append(Path(shutil.copyfile(f, folder / f"{rng.getrandbits(64):016x}")))
    return copies


def read_positions(paths) -> dict[str, tuple[float, float, float]]:
    """SOPInstanceUID -> ImagePositionPatient of each file."""
    found = {}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        found[str(ds.SOPInstanceUID)] = tuple(float(v) for v in ds.ImagePositionPatient)
    return found


def _shared_groups(spacing: float) -> Dataset:
    """The shared functional groups of an axial enhanced image: 0.9 mm pixels, ``spacing`` thick."""
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.9, 0.9], spacing
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    return shared


def write_enhanced_with_positions(source: Path, target: Path, spacing: float = 1.2, slope: float = 2.0,
                                  intercept: float = -10.0, positions=None) -> Path:
    """A copy of an enhanced multi-frame image given the functional groups real scanners write:
    shared pixel measures and orientation, and per-frame positions that run *against* the frame
    order (frame 1 is the highest slice) with a per-frame rescale, so that ordering by position and
    reading the per-frame macros are both visible. ``positions`` gives each frame's
    ImagePositionPatient instead (float noise, a shuffled order)."""
    ds = pydicom.dcmread(source)
    frames = int(ds.NumberOfFrames)
    ds.SharedFunctionalGroupsSequence = [_shared_groups(spacing)]
    per_frame = []
    for k in range(frames):
        position, transform, item = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = ([float(v) for v in positions[k]] if positions is not None
                                         else [-30.0, -30.0, spacing * (frames - 1 - k)])
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "US"
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [position], [transform]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.save_as(target, enforce_file_format=True)
    return target


def write_enhanced_temporal(source: Path, target: Path, spacing: float = 3.0) -> Path:
    """A copy of an enhanced multi-frame image as two temporal positions of half as many slices,
    frames interleaved (frame 1: slice 1 time 1, frame 2: slice 1 time 2, ...), with the
    dimension index (TemporalPositionIndex, InStackPositionNumber) scanners write."""
    ds = pydicom.dcmread(source)
    frames = int(ds.NumberOfFrames)
    ds.SharedFunctionalGroupsSequence = [_shared_groups(spacing)]
    dimensions = []
    for pointer in (0x00209128, 0x00209057):  # TemporalPositionIndex, InStackPositionNumber
        item = Dataset()
        item.DimensionIndexPointer, item.FunctionalGroupPointer = pointer, 0x00209111  # FrameContentSequence
        dimensions.append(item)
    ds.DimensionIndexSequence = dimensions
    per_frame = []
    for k in range(frames):
        position, content, item = Dataset(), Dataset(), Dataset()
        slice_number, time = k // 2 + 1, k % 2 + 1
        position.ImagePositionPatient = [-30.0, -30.0, spacing * slice_number]
        content.TemporalPositionIndex, content.InStackPositionNumber, content.StackID = time, slice_number, "1"
        content.DimensionIndexValues = [time, slice_number]
        item.PlanePositionSequence, item.FrameContentSequence = [position], [content]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.save_as(target, enforce_file_format=True)
    return target
