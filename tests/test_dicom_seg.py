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
