"""Stacks as scanners write them: float noise in regular positions, a protocol that changes its
spacing, a slice really missing. Every oracle reads the positions back from the written headers
with pydicom and works with numpy here, never through tilepipe's geometry. Stand-in model where a
run is needed: these tests are about geometry."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import tilepipe
from tests.dicom_helpers import dicom_data, write_enhanced_with_positions
from tilepipe.sources import SourceSpec, open_source
from tilepipe.sources.dicom_geometry import order_stack, slice_steps
from tilepipe.sources.dicom_spacing import spacing_of
from tilepipe.testing import write_ct_series

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
HEAD_CT_STEPS = [4.22] * 13 + [1.14] + [7.38] * 13
"""The issue's 28-slice head CT: 4.22 mm through the skull base, one 1.14 mm step, then 7.38 mm."""


def jittered_stack(n: int, step: float, seed: int) -> np.ndarray:
    """``n`` origins ``step`` mm apart along z, each coordinate off by up to 1e-5 mm (DS rounding)."""
    rng = np.random.default_rng(seed)
    return np.array([[-30.0, -30.0, step * k] for k in range(n)]) + rng.uniform(-1e-5, 1e-5, (n, 3))


def frame_positions(path) -> list[np.ndarray]:
    """Each frame's ImagePositionPatient, read with pydicom from the per-frame functional groups."""
    frames = pydicom.dcmread(path, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    return [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) for f in frames]


def test_a_jittered_enhanced_stack_in_shuffled_order_keeps_its_affine(tmp_path):
    """The issue's enhanced MR: steps of 2.400000, 2.400002, 2.399998 mm. Frames are written in a
    shuffled order, so nothing but the positions says where a slice goes."""
    shuffle = np.random.default_rng(7).permutation(10)
    positions = jittered_stack(10, 2.4, seed=1)[shuffle]
    path = write_enhanced_with_positions(dicom_data("multiframe", "emri_small.dcm"), tmp_path / "mr.dcm",
                                         spacing=2.4, positions=positions)
    source = open_source(SourceSpec(path=str(path)))
    d = source.geometry()["dicom"]
    expected = frame_positions(path)
    assert d["affine"] is not None and d["irregular_slices"] is None
    along = [float(expected[n - 1][2]) for n in d["frame_numbers"]]
    assert along == sorted(along)  # stack order is ascending z, whatever the frame order
    affine = np.asarray(d["affine"])
    for z, n in enumerate(d["frame_numbers"]):
        assert np.abs(affine @ (z, 0, 0, 1) - (*expected[n - 1], 1)).max() < 0.01
    assert not [w for w in source.warnings if "affine" in w or "spacing" in w or "missing" in w]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(3, 60), step=st.floats(0.3, 8.0), seed=st.integers(0, 2**32 - 1))
def test_float_noise_never_makes_a_regular_stack_irregular(n, step, seed):
    positions = jittered_stack(n, step, seed)[np.random.default_rng(seed).permutation(n)]
    order = order_stack(positions, AXIAL)
    steps = slice_steps([positions[i] for i in order.order], AXIAL)
    assert steps.irregular is None and abs(steps.step[2] - step) < 1e-4
    assert not order.gaps


def head_ct(folder, skip=()):
    locations = np.concatenate([[0.0], np.cumsum(HEAD_CT_STEPS)])
    return write_ct_series(folder, len(locations), positions=[(-160.0, -160.0, z) for z in locations], skip=skip)


def test_a_spacing_change_is_said_once_and_no_slice_is_called_missing(tmp_path):
    paths = head_ct(tmp_path / "ct")
    source = open_source(SourceSpec(path=str(tmp_path / "ct")))
    z = np.sort([float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths])
    steps = np.round(np.diff(z), 6)
    assert sorted(set(steps)) == [1.14, 4.22, 7.38] and len(z) == 28
    assert not [w for w in source.warnings if "missing" in w]
    [said] = [w for w in source.warnings if "spacing" in w]
    assert "13 steps of 4.22 mm" in said and "one 1.14 mm step" in said and "13 steps of 7.38 mm" in said
    assert "no affine" in said and "z as the slice index" in said  # and what OME readers get
    assert source.geometry()["dicom"]["affine"] is None


def test_a_slice_removed_from_a_regular_stack_is_called_missing(tmp_path):
    paths = write_ct_series(tmp_path / "ct", 12, spacing=2.5, skip=(5,))
    z = np.sort([float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths])
    wide = int(np.argmax(np.diff(z)))  # the gap, from the headers: 10.0 -> 15.0 mm
    source = open_source(SourceSpec(path=str(tmp_path / "ct")))
    [missing] = [w for w in source.warnings if "slice(s) missing between" in w]
    assert "about 1 slice(s) missing" in missing and f"from {z[wide]:.3g} to {z[wide + 1]:.3g} mm" in missing
    assert "uneven" not in " ".join(source.warnings)


def test_a_slice_missing_across_a_spacing_change_is_not_guessed():
    """A 5 mm step between runs of 2.5 and 4 mm is no whole multiple of one spacing around it."""
    spacing = spacing_of(np.concatenate([np.arange(5) * 2.5, 10 + 5 + np.arange(5) * 4.0]))
    assert not spacing.gaps and spacing.changes


@settings(max_examples=60, deadline=None)
@given(before=st.integers(2, 20), after=st.integers(2, 20), a=st.floats(0.5, 8), ratio=st.floats(1.15, 1.85),
       odd=st.floats(0.1, 0.9))
def test_a_protocol_spacing_change_has_no_gap(before, after, a, ratio, odd):
    """Runs of ``a`` and ``a * ratio`` mm (ratio short of a whole multiple) with one odd step
    between them: the issue's head CT pattern at any scale."""
    steps = [a] * before + [a * odd] + [a * ratio] * after
    spacing = spacing_of(np.concatenate([[0.0], np.cumsum(steps)]))
    assert not spacing.gaps and spacing.changes and "uneven slice spacing" in spacing.describe()


def test_an_irregular_stack_gets_no_physical_z_in_its_ome_metadata(tmp_path):
    """Either every slice lies within 0.1 mm of where OME puts it, or z claims no unit and says
    why: the real positions come from the headers here."""
    from ome_zarr_models.v05.image_label import ImageLabel

    paths = head_ct(tmp_path / "ct")
    out = tmp_path / "ct.zarr"
    summary = tilepipe.run(str(tmp_path / "ct"), str(out), model="standin", weights="none")
    z = np.sort([float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths])
    group = zarr.open_group(str(out), mode="r")
    [multiscale] = group.attrs["ome"]["multiscales"]
    axes = {a["name"]: a for a in multiscale["axes"]}
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"][0]
    if "unit" in axes["z"]:
        assert np.abs(z[0] + scale * np.arange(len(z)) - z).max() <= 0.1
    else:
        assert "not regularly spaced" in multiscale["metadata"]["z_axis"]
    assert axes["y"]["unit"] == axes["x"]["unit"] == "millimeter"
    ImageLabel.from_zarr(group)  # still valid OME-NGFF 0.5
    assert any("z as the slice index" in w for w in summary["warnings"])


@pytest.mark.parametrize("name", ["series_mr_ge_epi", "enhanced/philips_mprage.dcm"])
def test_real_regular_stacks_stay_regular(name):
    source = open_source(SourceSpec(path=str(dicom_data(*name.split("/")))))
    d = source.geometry()["dicom"]
    assert d["affine"] is not None and d["irregular_slices"] is None
    assert not [w for w in source.warnings if "missing" in w or "spacing" in w]


def test_plan_shows_the_geometry_warnings_a_run_gives(tmp_path):
    from click.testing import CliRunner

    from tilepipe.cli import main

    head_ct(tmp_path / "ct")
    result = CliRunner().invoke(main, ["plan", str(tmp_path / "ct"), "--model", "standin", "--weights", "none"])
    assert result.exit_code == 0, result.output
    summary = tilepipe.run(str(tmp_path / "ct"), str(tmp_path / "ct.zarr"), model="standin", weights="none")
    geometry = [w for w in summary["warnings"] if "spacing" in w]
    assert geometry and all(f"WARNING: {w}" in result.output for w in geometry)
