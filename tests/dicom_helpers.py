"""DICOM files for tests and the benchmark: the real samples beside the repo, and small synthetic
series written with pydicom when a test needs a controlled input (a CT-like phantom with known
positions, rescale and photometric interpretation)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DICOM_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"


def dicom_data(*parts: str) -> Path:
    import pytest

    path = DICOM_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real DICOM sample data not found at {path} (tests expect ../shared/data beside the repo)")
    return path


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


def ct_phantom(size: int, z: float) -> np.ndarray:
    """A CT-like slice in HU: air, a body ellipse of soft tissue, two lungs and a bone ring whose
    size changes with ``z`` so that every slice differs."""
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    grow = 0.85 + 0.1 * np.sin(z / 40.0)
    hu = np.full((size, size), -1000.0)
    body = (xx / (0.9 * grow)) ** 2 + (yy / (0.7 * grow)) ** 2 < 1
    hu[body] = 40.0
    for cx in (-0.4, 0.4):
        hu[((xx - cx) / 0.28) ** 2 + (yy / 0.4) ** 2 < grow] = -800.0
    ring = np.abs(np.hypot(xx, yy + 0.45) - 0.12 * grow) < 0.03
    hu[ring] = 700.0
    return hu


def write_ct_series(folder: Path, slices: int, size: int = 64, spacing: float = 2.5, skip: tuple[int, ...] = (),
                    photometric: str = "MONOCHROME2", series_uid: str | None = None,
                    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0), window: tuple[float, float] | None = (40, 400),
                    description: str = "synthetic CT", positions=None, gantry_tilt: float | None = None,
                    echoes: int = 1) -> list[Path]:
    """A CT series of ``slices`` positions (``skip`` leaves some out), stored as 12-bit unsigned with
    RescaleIntercept -1024, files named in random order and InstanceNumber reversed.

    ``positions`` gives each slice's ImagePositionPatient instead of a regular step along the
    normal (a gantry tilt, uneven spacing); ``gantry_tilt`` writes GantryDetectorTilt; ``echoes``
    writes that many images per position (EchoNumbers 1.., EchoTime 10 ms apart, darker each echo)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), series_uid or generate_uid(), generate_uid()
    normal = np.cross(orientation[:3], orientation[3:])
    paths = []
    for k, echo in ((k, e) for k in range(slices) for e in range(1, echoes + 1)):
        if k in skip:
            continue
        hu = ct_phantom(size, k * spacing)
        stored = np.round((hu + 1024) / echo).astype(np.uint16)
        ds = _image_dataset(CT_IMAGE_STORAGE, "CT", study, series, description)
        ds.FrameOfReferenceUID = frame
        ds.InstanceNumber = (slices - k) * echoes - echo + 1
        position = positions[k] if positions is not None else np.array([-160.0, -160.0, 0.0]) + k * spacing * normal
        ds.ImagePositionPatient = [float(v) for v in position]
        if gantry_tilt is not None:
            ds.GantryDetectorTilt = gantry_tilt
        if echoes > 1:
            ds.EchoNumbers, ds.EchoTime = echo, 10.0 * echo
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = [320.0 / size, 320.0 / size]
        ds.SliceThickness = spacing
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        if window:
            ds.WindowCenter, ds.WindowWidth = window
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = stored.tobytes()
        path = folder / f"{random.Random(k if echoes == 1 else repr((k, echo))).getrandbits(32):08x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_sr(path: Path, series_uid: str | None = None) -> Path:
    """A Comprehensive SR document: valid DICOM with no pixel data."""
    ds = _image_dataset(COMPREHENSIVE_SR_STORAGE, "SR", generate_uid(), series_uid or generate_uid(), "report")
    ds.ValueType = "CONTAINER"
    ds.save_as(path, enforce_file_format=True)
    return path


def _image_dataset(sop_class: str, modality: str, study: str, series: str, description: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = modality, description, 1
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^CT", "PHANTOM", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Manufacturer = "tilepipe tests"
    return ds


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
                                  intercept: float = -10.0) -> Path:
    """A copy of an enhanced multi-frame image given the functional groups real scanners write:
    shared pixel measures and orientation, and per-frame positions that run *against* the frame
    order (frame 1 is the highest slice) with a per-frame rescale, so that ordering by position and
    reading the per-frame macros are both visible."""
    ds = pydicom.dcmread(source)
    frames = int(ds.NumberOfFrames)
    ds.SharedFunctionalGroupsSequence = [_shared_groups(spacing)]
    per_frame = []
    for k in range(frames):
        position, transform, item = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [-30.0, -30.0, spacing * (frames - 1 - k)]
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
