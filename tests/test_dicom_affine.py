"""The DICOM affine against the headers: every oracle here reads ImagePositionPatient,
ImageOrientationPatient and PixelSpacing with pydicom in the test and computes where a voxel must
be, never through tilepipe's geometry code. Stand-in model: these tests are about geometry."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

import tilepipe
from tests.dicom_helpers import dicom_data
from tilepipe.exporters import export
from tilepipe.sources import SourceSpec, open_source
from tilepipe.testing import write_ct_series

STANDIN = {"model": "standin", "weights": "none"}
TILT = 18.5
"""Degrees: the gantry tilt of the real head CT the issue was measured on."""


def headers(paths) -> dict[str, pydicom.Dataset]:
    """SOPInstanceUID -> header of each file."""
    found = {}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        found[str(ds.SOPInstanceUID)] = ds
    return found


def voxel_position(ds, y: int, x: int) -> np.ndarray:
    """DICOM's pixel placement (PS3.3 C.7.6.2.1.1): IPP + x * column spacing * row direction +
    y * row spacing * column direction."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    ps = np.asarray(ds.PixelSpacing, float)
    return np.asarray(ds.ImagePositionPatient, float) + x * ps[1] * iop[:3] + y * ps[0] * iop[3:]


def tilted_positions(slices: int, step: float, tilt: float) -> tuple[tuple[float, ...], list[np.ndarray]]:
    """A gantry-tilted CT: the image plane is rotated about the patient's x axis by ``tilt`` while
    the table (and so each slice origin) advances along z."""
    t = np.radians(tilt)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t)))
    return orientation, [np.array([-160.0, -160.0, -40.0]) + k * np.array([0.0, 0.0, step]) for k in range(slices)]


def run_and_attrs(folder, out, **options) -> tuple[dict, dict]:
    summary = tilepipe.run(str(folder), str(out), **STANDIN, **options)
    store = tilepipe.open(out)
    assert store.is_complete
    return store.group.attrs["dicom"], summary


def test_a_tilted_series_affine_reproduces_every_slice_origin(tmp_path):
    orientation, positions = tilted_positions(12, 2.5, TILT)
    paths = write_ct_series(tmp_path / "tilted", 12, orientation=orientation, positions=positions, gantry_tilt=TILT)
    d, summary = run_and_attrs(tmp_path / "tilted", tmp_path / "mask.zarr")
    found = headers(paths)
    affine = np.asarray(d["affine"])
    normal = np.cross(orientation[:3], orientation[3:])
    along = [float(np.asarray(found[u].ImagePositionPatient, float) @ normal) for u in d["sop_instance_uids"]]
    assert along == sorted(along)  # planes in ascending order along the normal
    for z, uid in enumerate(d["sop_instance_uids"]):
        for y, x in ((0, 0), (0, 63), (40, 17)):
            assert np.abs(affine @ (z, y, x, 1) - (*voxel_position(found[uid], y, x), 1)).max() < 0.01
    # the normal x spacing affine of old missed the last slice by (n-1) * 2.5 * sin(tilt) in y
    assert summary["input"]["gantry_tilt_degrees"] == pytest.approx(TILT, abs=0.01)
    assert d["gantry_tilt_degrees"] == pytest.approx(TILT, abs=0.01) and d["gantry_detector_tilt"] == TILT
    [warning] = [w for w in summary["warnings"] if "gantry tilt" in w]
    assert f"{TILT:.2f} deg" in warning and "sheared" in warning


def test_a_missing_slice_writes_no_affine_and_says_why(tmp_path):
    paths = write_ct_series(tmp_path / "gap", 10, skip=(6,))
    d, summary = run_and_attrs(tmp_path / "gap", tmp_path / "mask.zarr")
    assert d["affine"] is None and d["slice_step"] is None
    [warning] = [w for w in summary["warnings"] if "no affine" in w]
    assert "not regularly spaced" in warning and "1 gap(s)" in warning
    assert d["irregular_slices"] and warning in d["warnings"]
    found = headers(paths)
    assert d["slice_positions"] == [[float(v) for v in found[u].ImagePositionPatient] for u in d["sop_instance_uids"]]


def test_a_tilted_series_with_a_gap_has_no_affine_but_states_its_tilt(tmp_path):
    """The issue's head CT: tilted and with a larger gap. No affine can hold it; the tilt is still
    measured from the positions and stated."""
    orientation, positions = tilted_positions(9, 2.5, TILT)
    write_ct_series(tmp_path / "in", 9, orientation=orientation, positions=positions, skip=(4,), gantry_tilt=TILT)
    source = open_source(SourceSpec(path=str(tmp_path / "in")))
    d = source.geometry()["dicom"]
    assert d["affine"] is None and "1 gap(s)" in d["irregular_slices"]
    assert d["gantry_tilt_degrees"] == pytest.approx(TILT, abs=0.01)
    [tilt] = [w for w in source.warnings if "gantry tilt" in w]
    assert f"{TILT:.2f} deg" in tilt and "sheared" not in tilt
    assert source.describe()["gantry_tilt_degrees"] == pytest.approx(TILT, abs=0.01)


def test_uneven_spacing_without_a_gap_writes_no_affine(tmp_path):
    steps = [0.0, 2.0, 4.0, 6.6, 8.6, 10.6]  # one step 30 % long: uneven, not a missing slice
    write_ct_series(tmp_path / "uneven", 6, positions=[(-160.0, -160.0, z) for z in steps])
    source = open_source(SourceSpec(path=str(tmp_path / "uneven")))
    d = source.geometry()["dicom"]
    assert d["affine"] is None and "uneven slice spacing" in d["irregular_slices"]
    assert any("no affine" in w for w in source.warnings)


def test_a_regular_axial_series_keeps_the_normal_times_spacing_affine(tmp_path):
    """The affine a regular axial series always had, written out by hand for the generator's
    series: slices 2.5 mm apart along +z, 64 px of 320 / 64 = 5 mm, the first origin at
    (-160, -160, 0); z steps along +z, y (rows) along the column direction +y, x along +x."""
    paths = write_ct_series(tmp_path / "axial", 8, spacing=2.5)
    d, summary = run_and_attrs(tmp_path / "axial", tmp_path / "mask.zarr")
    assert np.allclose(d["affine"], [[0.0, 0.0, 5.0, -160.0],
                                     [0.0, 5.0, 0.0, -160.0],
                                     [2.5, 0.0, 0.0, 0.0],
                                     [0.0, 0.0, 0.0, 1.0]], atol=1e-9)
    found = headers(paths)
    for z, uid in enumerate(d["sop_instance_uids"]):  # and every slice's own header agrees
        for y, x in ((0, 0), (63, 0), (17, 40)):
            assert np.allclose(np.asarray(d["affine"]) @ (z, y, x, 1), (*voxel_position(found[uid], y, x), 1))
    assert d["gantry_tilt_degrees"] == 0 and not any("tilt" in w or "affine" in w for w in summary["warnings"])


@pytest.mark.parametrize("name", ["series_mr_ge_epi", "philips_mprage"])
def test_real_affines_reproduce_every_image_position(name):
    """The GE EPI series (axial, 5 mm) and the Philips MPRAGE (176 sagittal frames, oblique: each
    frame's origin steps (-1.0, 0, +0.034) mm) against their own headers."""
    path = dicom_data("series_mr_ge_epi") if name == "series_mr_ge_epi" else dicom_data("enhanced", "philips_mprage.dcm")
    d = open_source(SourceSpec(path=str(path))).geometry()["dicom"]
    affine = np.asarray(d["affine"])
    if name == "series_mr_ge_epi":
        found = headers(sorted(path.iterdir()))
        expected = [np.asarray(found[u].ImagePositionPatient, float) for u in d["sop_instance_uids"]]
    else:
        frames = pydicom.dcmread(path, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
        expected = [np.asarray(frames[n - 1].PlanePositionSequence[0].ImagePositionPatient, float)
                    for n in d["frame_numbers"]]
        assert len(expected) == 176
    for z, position in enumerate(expected):
        assert np.abs(affine @ (z, 0, 0, 1) - (*position, 1)).max() < 0.01


@pytest.mark.parametrize("kind", ["tilted", "missing slice"])
def test_seg_export_stays_valid_for_tilted_and_irregular_series(tmp_path, kind):
    if kind == "tilted":
        orientation, positions = tilted_positions(6, 2.5, TILT)
        paths = write_ct_series(tmp_path / "in", 6, orientation=orientation, positions=positions, gantry_tilt=TILT)
    else:
        paths = write_ct_series(tmp_path / "in", 7, skip=(3,))
    tilepipe.run(str(tmp_path / "in"), str(tmp_path / "mask.zarr"), **STANDIN)
    export(str(tmp_path / "mask.zarr"), "dicom-seg", str(tmp_path / "seg.dcm"))
    store = tilepipe.open(tmp_path / "mask.zarr")
    mask, d = store.mask[...], store.group.attrs["dicom"]
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    labels = seg.get_pixels_by_source_instance(d["sop_instance_uids"], combine_segments=True)
    lut = np.full(256, 255, np.uint8)
    for item in seg.SegmentSequence:
        lut[int(item.SegmentNumber)] = int(item.TrackingID.rsplit(" ", 1)[1])
    assert np.array_equal(lut[labels], mask)
    found = headers(paths)
    for frame in seg.PerFrameFunctionalGroupsSequence:  # each SEG frame sits where its source slice does
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient,
                           found[source].ImagePositionPatient, atol=1e-3)
