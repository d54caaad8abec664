"""DICOM SEG export: written with highdicom, read back with highdicom, the same mask, referencing the
source instances. Stand-in model with random weights: the mask only has to be a mask."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

import tilepipe
from tests.conftest import shared_file
from pydicom.dataset import Dataset

from tests.dicom_helpers import dicom_data, shuffled_copy, write_enhanced_with_positions
from tilepipe.cli import main
from tilepipe.errors import TilepipeError
from tilepipe.exporters import export

STANDIN = {"model": "standin", "weights": "none"}
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def classes_of(seg) -> dict[int, int]:
    """Segment number -> tilepipe class, from the tracking ids the exporter writes."""
    return {int(item.SegmentNumber): int(item.TrackingID.rsplit(" ", 1)[1]) for item in seg.SegmentSequence}


def as_classes(labels: np.ndarray, seg) -> np.ndarray:
    lut = np.full(256, 255, np.uint8)
    for number, c in classes_of(seg).items():
        lut[number] = c
    return lut[labels]


def referenced_instances(seg) -> set[str]:
    return {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}


def test_seg_round_trip_of_a_series(tmp_path):
    folder = tmp_path / "series"
    shuffled_copy(dicom_data("series_mr_ge_epi"), folder)
    tilepipe.run(str(folder), str(tmp_path / "mask.zarr"), **STANDIN)
    result = CliRunner().invoke(main, ["export", str(tmp_path / "mask.zarr"), "--to", "dicom-seg",
                                       str(tmp_path / "seg.dcm")])
    assert result.exit_code == 0, result.output
    store = tilepipe.open(tmp_path / "mask.zarr")
    mask, d = store.mask[...], store.group.attrs["dicom"]
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    assert sorted(classes_of(seg).values()) == sorted(int(c) for c in np.unique(mask))
    labels = seg.get_pixels_by_source_instance(d["sop_instance_uids"], combine_segments=True)
    assert np.array_equal(as_classes(labels, seg), mask)
    assert referenced_instances(seg) == set(d["sop_instance_uids"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == d["series_instance_uid"]
    assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID) == (d["study_instance_uid"], d["frame_of_reference_uid"])
    names = store.group.attrs["class_names"]
    assert [item.SegmentLabel for item in seg.SegmentSequence] == [names[c] for c in classes_of(seg).values()]


def test_seg_of_an_enhanced_multiframe_pairs_planes_with_their_frames(tmp_path):
    path = write_enhanced_with_positions(dicom_data("multiframe", "emri_small.dcm"), tmp_path / "enhanced.dcm")
    tilepipe.run(str(path), str(tmp_path / "mask.zarr"), **STANDIN)
    store = tilepipe.open(tmp_path / "mask.zarr")
    mask, d = store.mask[...], store.group.attrs["dicom"]
    assert d["frame_numbers"] == list(range(10, 0, -1))
    export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    labels = seg.get_pixels_by_source_frame(d["sop_instance_uids"][0], d["frame_numbers"], combine_segments=True)
    assert np.array_equal(as_classes(labels, seg), mask)


def test_seg_of_a_whole_slide_level_tiles_the_total_pixel_matrix(tmp_path):
    folder = dicom_data("wsi_cmu1")
    tilepipe.run(str(folder), str(tmp_path / "mask.zarr"), level=2, **STANDIN)
    export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))
    level2 = pydicom.dcmread(folder / "level-2-frames-0-4.dcm", stop_before_pixels=True)
    seg = pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.DimensionOrganizationType.startswith("TILED_")
    assert seg.TotalPixelMatrixRows == level2.TotalPixelMatrixRows
    assert seg.TotalPixelMatrixColumns == level2.TotalPixelMatrixColumns
    assert (seg.Rows, seg.Columns) == (level2.Rows, level2.Columns)
    assert referenced_instances(seg) == {level2.SOPInstanceUID}


def test_seg_needs_the_source_files_it_references(tmp_path):
    folder = tmp_path / "series"
    copies = shuffled_copy(dicom_data("series_mr_ge_epi"), folder, nested=False)
    tilepipe.run(str(folder), str(tmp_path / "mask.zarr"), **STANDIN)
    copies[3].unlink()
    with pytest.raises(TilepipeError, match=f"{copies[3]}: source file of .* is gone"):
        export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))
    assert not (tmp_path / "seg.dcm").exists()


def test_seg_refuses_a_store_not_made_from_dicom(tmp_path):
    tif = shared_file("geotiff", "rmnp-rgb.tif")
    tilepipe.run(str(tif), str(tmp_path / "mask.zarr"), **STANDIN)
    with pytest.raises(TilepipeError, match="its input was not DICOM"):
        export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))


def write_per_frame_enhanced(source, target, volumes: int = 1, spacing: float = 2.4):
    """A copy of an enhanced multi-frame image written the way Philips and Siemens enhanced MR are:
    pixel measures, orientation and position in every frame's own functional groups, none shared.
    Its planes are sagittal (slice normal -x), frame 1 is the last slice along it, and with
    ``volumes`` 2 the frames alternate between two temporal positions at each slice."""
    ds = pydicom.dcmread(source)
    frames = int(ds.NumberOfFrames)
    orientation = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.DimensionIndexSequence = []
    for pointer in ((0x00209128,) if volumes > 1 else ()) + (0x00209057,):
        item = Dataset()
        item.DimensionIndexPointer, item.FunctionalGroupPointer = pointer, 0x00209111
        ds.DimensionIndexSequence.append(item)
    per_frame = []
    for k in range(frames):
        z, time = k // volumes, k % volumes + 1
        position, plane, measures, content, item = Dataset(), Dataset(), Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [spacing * z + 0.25, -40.0, 30.0]
        plane.ImageOrientationPatient = orientation
        measures.PixelSpacing, measures.SliceThickness = [0.8, 0.8], spacing
        content.TemporalPositionIndex, content.InStackPositionNumber = time, z + 1
        content.DimensionIndexValues = [time, z + 1] if volumes > 1 else [z + 1]
        item.PlanePositionSequence, item.PlaneOrientationSequence = [position], [plane]
        item.PixelMeasuresSequence, item.FrameContentSequence = [measures], [content]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    if "SharedFunctionalGroupsSequence" in ds:
        del ds.SharedFunctionalGroupsSequence
    ds.save_as(target, enforce_file_format=True)
    return target


def seg_planes(path) -> dict[tuple[float, ...], np.ndarray]:
    """The SEG read back with highdicom, as one plane of tilepipe classes (255 where no segment)
    per position: each BINARY frame holds one segment at one ImagePositionPatient."""
    seg = hd.seg.segread(path)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    classes = classes_of(seg)
    planes: dict[tuple[float, ...], np.ndarray] = {}
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, pixels):
        where = tuple(round(float(v), 3) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        plane = planes.setdefault(where, np.full(frame.shape, 255, np.uint8))
        plane[frame > 0] = classes[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
    return planes


def assert_seg_equals_mask(seg_path, source, frame_numbers: list[int], mask: np.ndarray) -> None:
    """Plane ``k`` of ``mask`` was made from frame ``frame_numbers[k]`` of ``source``: the SEG must
    hold that plane at that frame's position, read from the source's header with pydicom."""
    frames = pydicom.dcmread(source, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    planes = seg_planes(seg_path)
    expected = {tuple(round(float(v), 3) for v in frames[n - 1].PlanePositionSequence[0].ImagePositionPatient): plane
                for n, plane in zip(frame_numbers, mask)}
    assert set(planes) <= set(expected)
    for where, plane in expected.items():
        got = planes.get(where, np.full(plane.shape, 255, np.uint8))
        assert np.array_equal(got, plane), where


def test_seg_of_an_enhanced_image_with_per_frame_geometry(tmp_path):
    path = write_per_frame_enhanced(dicom_data("multiframe", "emri_small.dcm"), tmp_path / "enhanced.dcm")
    tilepipe.run(str(path), str(tmp_path / "mask.zarr"), **STANDIN)
    store = tilepipe.open(tmp_path / "mask.zarr")
    mask, d = store.mask[...], store.group.attrs["dicom"]
    assert d["frame_numbers"] == list(range(10, 0, -1)) and len(np.unique(mask)) > 1
    export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))
    assert_seg_equals_mask(tmp_path / "seg.dcm", path, d["frame_numbers"], mask)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    labels = seg.get_pixels_by_source_frame(d["sop_instance_uids"][0], d["frame_numbers"], combine_segments=True)
    assert np.array_equal(as_classes(labels, seg), mask)
    assert [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing] == [0.8, 0.8]


def test_seg_of_a_4d_enhanced_image_and_of_one_selected_volume(tmp_path):
    path = write_per_frame_enhanced(dicom_data("multiframe", "emri_small.dcm"), tmp_path / "4d.dcm", volumes=2)
    tilepipe.run(str(path), str(tmp_path / "mask.zarr"), **STANDIN)
    store = tilepipe.open(tmp_path / "mask.zarr")
    mask, d = store.mask[...], store.group.attrs["dicom"]
    assert mask.shape == (2, 5, 64, 64)
    written = export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm")).split("\n")
    for v, seg_path in enumerate(written):
        assert_seg_equals_mask(seg_path, path, d["frame_numbers"][v * 5:(v + 1) * 5], mask[v])
    tilepipe.run(str(path), str(tmp_path / "t2.zarr"), select="TemporalPositionIndex=2", **STANDIN)
    kept = tilepipe.open(tmp_path / "t2.zarr")
    frames = kept.group.attrs["dicom"]["frame_numbers"]
    assert len(frames) == 5 and all(n % 2 == 0 for n in frames)  # frames 2, 4, ... of 10: not the whole file
    export(str(tmp_path / "t2.zarr"), "dicom-seg", str(tmp_path / "t2.dcm"))
    assert_seg_equals_mask(tmp_path / "t2.dcm", path, frames, kept.mask[...])


def test_seg_of_the_real_philips_enhanced_mr(tmp_path):
    path = dicom_data("enhanced", "philips_mprage.dcm")
    tilepipe.run(str(path), str(tmp_path / "mask.zarr"), **STANDIN)
    store = tilepipe.open(tmp_path / "mask.zarr")
    mask, d = store.mask[...], store.group.attrs["dicom"]
    export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))
    assert_seg_equals_mask(tmp_path / "seg.dcm", path, d["frame_numbers"], mask)


def test_seg_of_frames_without_positions_is_refused_with_the_reason(tmp_path):
    tilepipe.run(str(dicom_data("multiframe", "emri_small.dcm")), str(tmp_path / "mask.zarr"), **STANDIN)
    with pytest.raises(TilepipeError, match="its 10 planes have no position .* must place each of its frames"):
        export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))
    assert not (tmp_path / "seg.dcm").exists()
