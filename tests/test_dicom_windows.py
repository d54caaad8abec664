"""Per-volume windows of a 4-D DICOM series: a field-map series holds a magnitude image and a field
map in Hz, two quantities that one window would clip or saturate, so each volume is windowed with
its own files' WindowCenter/WindowWidth, else with its own percentiles.

Oracles come from the files: the windows from their headers and the percentiles from their pixels,
both read here with pydicom and numpy; and the mask of each volume run alone with ``--select``
(which windows it with its own files only), which a 4-D run must reproduce plane for plane; and
the PNG overlay, which shows volume 0's middle slice in volume 0's window. Stand-in model: the
network only has to react to its input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import tilepipe
from tests.dicom_helpers import dicom_data
from tests.test_exporters import assert_close_but_legend, blended
from tilepipe.exporters import export
from tilepipe.testing import ct_phantom

STANDIN = {"model": "standin", "weights": "none"}
MAGNITUDE, FIELD_MAP = "ORIGINAL\\PRIMARY\\M\\FFE", "ORIGINAL\\PRIMARY\\B0\\FFE"
VOLUMES = (FIELD_MAP, MAGNITUDE)
"""The volumes in tilepipe's order: ascending values of what tells them apart ("B0" before "M")."""


def write_field_map_series(folder: Path, slices: int = 3, windows: bool = True) -> list[Path]:
    """A Philips-like B0 field-map series: at each of ``slices`` positions a magnitude image (stored
    values 0-3000, windows around 1076/1870 that change a little per slice) and a field map in Hz
    (stored + RescaleIntercept -1000, so -600..600 Hz, window 0/1000), told apart by ImageType."""
    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(slices):
        phantom = ct_phantom(64, 10.0 * k)  # -1000..700
        for kind in (MAGNITUDE, FIELD_MAP):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "MR", "B0 map", 1
            ds.PatientName, ds.PatientID = "Phantom^MR", "PHANTOM"
            ds.ImageType, ds.InstanceNumber = kind, 2 * k + (kind == FIELD_MAP) + 1
            ds.ImagePositionPatient, ds.ImageOrientationPatient = [-120.0, -120.0, 4.0 * k], [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing, ds.SliceThickness = [3.75, 3.75], 4.0
            if kind == MAGNITUDE:
                stored = (phantom + 1000) * 1.75
                ds.RescaleSlope, ds.RescaleIntercept = 1, 0
                window = (1076 + 4 * k, 1870 - 6 * k)
            else:
                stored = phantom * 0.6 + 150 * np.sin(np.arange(64) / 7.0) + 1000
                ds.RescaleSlope, ds.RescaleIntercept = 1, -1000
                window = (0, 1000)
            if windows:
                ds.WindowCenter, ds.WindowWidth = window
            ds.Rows = ds.Columns = 64
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = np.round(stored).astype(np.uint16).tobytes()
            paths.append(folder / f"{generate_uid()[-12:]}.dcm")
            ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def headers_of(paths, kind: str) -> list[pydicom.Dataset]:
    return [ds for ds in (pydicom.dcmread(p) for p in paths) if "\\".join(ds.ImageType) == kind]


def window_bounds(headers) -> tuple[float, float]:
    """The median file window of ``headers`` as (low, high)."""
    center = float(np.median([float(ds.WindowCenter) for ds in headers]))
    width = float(np.median([float(ds.WindowWidth) for ds in headers]))
    return center - width / 2, center + width / 2


def percentile_bounds(headers) -> tuple[float, float]:
    values = np.concatenate([(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).ravel()
                             for ds in headers])
    return float(np.percentile(values, 2)), float(np.percentile(values, 98))


@pytest.mark.parametrize("windows", [True, False], ids=["file windows", "percentiles"])
def test_each_volume_of_a_two_quantity_series_gets_its_own_window(tmp_path, windows):
    paths = write_field_map_series(tmp_path / "series", windows=windows)
    summary = tilepipe.run(str(tmp_path / "series"), str(tmp_path / "mask.zarr"), **STANDIN)
    store = tilepipe.open(tmp_path / "mask.zarr")
    assert store.mask.shape == (2, 3, 64, 64)
    bounds = window_bounds if windows else percentile_bounds
    expected = [bounds(headers_of(paths, kind)) for kind in VOLUMES]
    assert expected[0] != expected[1]
    recorded = store.group.attrs["dicom"]["volume_windows"]
    assert recorded == summary["input"]["volume_windows"]
    assert [v["labels"] for v in recorded] == [{"ImageType": kind} for kind in VOLUMES]
    for volume, (low, high) in zip(recorded, expected):
        assert volume["scaling"]["low"] == pytest.approx([low]) and volume["scaling"]["high"] == pytest.approx([high])
        assert (volume["window"] is not None) == windows
    assert summary["input"]["scaling"] == recorded[0]["scaling"]

    for v, kind in enumerate(VOLUMES):  # each volume as if it were segmented alone
        tilepipe.run(str(tmp_path / "series"), str(tmp_path / f"v{v}.zarr"), select=f"ImageType={kind}", **STANDIN)
        alone = tilepipe.open(tmp_path / f"v{v}.zarr")
        same = ("method", "low", "high")
        assert [alone.summary["input"]["scaling"][k] for k in same] == [recorded[v]["scaling"][k] for k in same]
        assert np.array_equal(alone.mask[...], store.mask[v]), f"volume {v} was not windowed on its own"


def test_the_real_diffusion_pair_gets_a_window_per_b_value(tmp_path):
    folder = dicom_data("four_d_dwi")
    summary = tilepipe.run(str(folder), str(tmp_path / "mask.zarr"), **STANDIN)
    headers = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda ds: int(ds.AcquisitionNumber))
    recorded = summary["input"]["volume_windows"]
    assert len(recorded) == 2
    for volume, ds in zip(recorded, headers):
        if "WindowCenter" in ds:
            low, high = window_bounds([ds])
        else:
            low, high = percentile_bounds([ds])
        assert volume["scaling"]["low"] == pytest.approx([low]) and volume["scaling"]["high"] == pytest.approx([high])


def test_png_overlay_of_a_4d_store_shows_volume_0_in_its_own_window(tmp_path):
    paths = write_field_map_series(tmp_path / "series")
    tilepipe.run(str(tmp_path / "series"), str(tmp_path / "mask.zarr"), **STANDIN)
    out = export(str(tmp_path / "mask.zarr"), "png", str(tmp_path / "overlay.png"), overlay=True)
    with Image.open(out) as image:
        png = np.asarray(image.convert("RGB"))
    field_maps = headers_of(paths, VOLUMES[0])
    middle = sorted(field_maps, key=lambda ds: float(ds.ImagePositionPatient[2]))[1]
    low, high = window_bounds(field_maps)
    values = middle.pixel_array * float(middle.RescaleSlope) + float(middle.RescaleIntercept)
    grey = np.clip((values - low) / (high - low), 0, 1) * 255
    mask = tilepipe.open(tmp_path / "mask.zarr").mask[0, 1]
    assert_close_but_legend(png, np.kron(blended(grey, mask), np.ones((12, 12, 1))))


def test_a_worker_opening_the_shipped_spec_scales_each_volume_as_the_client_did(tmp_path):
    """The task spec ships the scaling the client resolved, so that no worker samples again; a
    worker (a fresh open of the shipped spec, no cache shared with the client) must then give each
    volume its own numbers, the percentiles read here with numpy, not volume 0's for all."""
    from tilepipe.config import resolve_settings
    from tilepipe.preparation import prepare
    from tilepipe.sources.dicom import DicomSource

    paths = write_field_map_series(tmp_path / "series", windows=False)
    prepared = prepare(str(tmp_path / "series"), str(tmp_path / "m.zarr"), resolve_settings(None, None, **STANDIN),
                       load_engine=False)
    worker = DicomSource(prepared.context.source)
    expected = [percentile_bounds(headers_of(paths, kind)) for kind in VOLUMES]
    got = [(s.low[0], s.high[0]) for s in worker.volume_scalings]
    assert got == [pytest.approx(bounds) for bounds in expected]
