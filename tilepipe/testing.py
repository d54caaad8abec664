"""Synthetic DICOM inputs with known geometry, for tilepipe's tests and benchmarks and for anyone
checking tilepipe on data they control (as ``numpy.testing`` serves numpy's users).

Public because two programs need it: the test suite writes small series with a chosen gantry
tilt, gap, echo count or photometric interpretation, and ``benchmarks/dicom_throughput.py`` writes
large series of the same CT-like phantom. A benchmark must not import the tests, so the generator
lives here, once. Nothing in tilepipe's own run path imports this module.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
WSI_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"


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

    Slice ``k`` starts at (-160, -160, 0) mm + ``k * spacing`` along the slice normal, with pixels
    ``320 / size`` mm apart. ``positions`` gives each slice's ImagePositionPatient instead (a
    gantry tilt, uneven spacing); ``gantry_tilt`` writes GantryDetectorTilt; ``echoes`` writes that
    many images per position (EchoNumbers 1.., EchoTime 10 ms apart, darker each echo)."""
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


def slide_pattern(rows: int, columns: int) -> np.ndarray:
    """An RGB total pixel matrix whose every pixel says where it is: red ``row % 256``, green
    ``column % 256``, blue ``16 * (row // 256) + column // 256``."""
    r, c = np.mgrid[:rows, :columns]
    return np.stack([r % 256, c % 256, 16 * (r // 256) + c // 256], axis=-1).astype(np.uint8)


def write_slide(path: Path, rows: int, columns: int, frame: int = 128, organization: str | None = "TILED_SPARSE",
                leave_out: tuple[tuple[int, int], ...] = (), seed: int | None = 0, positions: bool = True) -> Path:
    """A one-level VL Whole Slide Microscopy image of :func:`slide_pattern`, ``frame`` px square
    frames, uncompressed. ``organization`` is written as DimensionOrganizationType (None: left out);
    ``leave_out`` lists the (frame row, frame column) cells with no frame; ``seed`` shuffles the
    frame order (None: row-major, as TILED_FULL); ``positions`` writes each frame's
    PlanePositionSlideSequence (1-based row and column in the total pixel matrix)."""
    image = slide_pattern(rows, columns)
    cells = [(r, c) for r in range(-(-rows // frame)) for c in range(-(-columns // frame)) if (r, c) not in leave_out]
    if seed is not None:
        random.Random(seed).shuffle(cells)
    padded = np.zeros((-(-rows // frame) * frame, -(-columns // frame) * frame, 3), np.uint8)
    padded[:rows, :columns] = image
    ds = _image_dataset(WSI_STORAGE, "SM", generate_uid(), generate_uid(), "synthetic slide")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.FrameOfReferenceUID, ds.InstanceNumber = generate_uid(), 1
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = rows, columns
    ds.Rows = ds.Columns = frame
    ds.NumberOfFrames = len(cells)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if organization is not None:
        ds.DimensionOrganizationType = organization
    measures, shared = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.0005, 0.0005], 0.001
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    if positions:
        per_frame = []
        for r, c in cells:
            place, item = Dataset(), Dataset()
            place.RowPositionInTotalImagePixelMatrix, place.ColumnPositionInTotalImagePixelMatrix = r * frame + 1, c * frame + 1
            place.XOffsetInSlideCoordinateSystem, place.YOffsetInSlideCoordinateSystem = c * frame * 0.0005, r * frame * 0.0005
            place.ZOffsetInSlideCoordinateSystem = 0.0
            item.PlanePositionSlideSequence = [place]
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = b"".join(padded[r * frame:(r + 1) * frame, c * frame:(c + 1) * frame].tobytes() for r, c in cells)
    ds.save_as(path, enforce_file_format=True)
    return path


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
