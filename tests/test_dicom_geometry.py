"""Pure DICOM geometry: slice order, gaps and duplicates, tile layout of a whole-slide level."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tilepipe.grid import Window
from tilepipe.sources.dicom_geometry import (
    distinct_orientations,
    order_stack,
    slice_normal,
    stack_affine,
)
from tilepipe.sources.dicom_wsi import TileLayout

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _orientation(angle: float, tilt: float) -> tuple[float, ...]:
    """A proper orthonormal row/column pair, rotated about z by ``angle`` and about x by ``tilt``."""
    rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    r = rx @ rz
    return (*r[:, 0], *r[:, 1])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), spacing=st.floats(0.3, 10), angle=st.floats(-3, 3), tilt=st.floats(-1.2, 1.2),
       seed=st.integers(0, 2**32 - 1))
def test_order_recovers_the_stack_from_any_shuffle(n, spacing, angle, tilt, seed):
    orientation = _orientation(angle, tilt)
    normal = slice_normal(orientation)
    origin = np.array([-100.0, 20.0, 7.5])
    positions = [origin + k * spacing * normal for k in range(n)]
    shuffle = np.random.default_rng(seed).permutation(n)
    order = order_stack([positions[i] for i in shuffle], orientation)
    assert [int(shuffle[i]) for i in order.order] == list(range(n))
    assert np.allclose(order.spacings, spacing)
    assert not order.gaps and not order.duplicates


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 30), data=st.data())
def test_a_missing_slice_is_a_gap_with_its_count(n, data):
    missing = data.draw(st.integers(1, 3))
    at = data.draw(st.integers(1, n - 2))
    kept = [k for k in range(n + missing) if not at <= k < at + missing]
    order = order_stack([(0.0, 0.0, 2.0 * k) for k in kept], AXIAL)
    [gap] = order.gaps
    assert gap.after == at - 1 and gap.missing == missing and np.isclose(gap.step, 2.0 * (missing + 1))


def test_duplicate_positions_are_reported_as_input_pairs():
    order = order_stack([(0, 0, 5), (0, 0, 0), (0, 0, 5)], AXIAL)
    assert order.duplicates == ((0, 2),)


def test_order_ignores_in_plane_offsets_and_follows_the_normal():
    # sagittal slices: rows along y, columns along -z, so the normal is -x; the in-plane y/z
    # offsets must not matter
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    assert np.allclose(slice_normal(sagittal), (-1, 0, 0))
    order = order_stack([(3.0, 50, -20), (1.0, -9, 4), (2.0, 0, 100)], sagittal)
    assert order.order == (0, 2, 1) and np.allclose(order.locations, (-3, -2, -1))


def test_orientations_within_tolerance_are_one():
    assert len(distinct_orientations([AXIAL, (1, 1e-6, 0, 0, 1, 0)])) == 1
    assert len(distinct_orientations([AXIAL, (1, 0, 0, 0, 0, -1)])) == 2


def test_affine_maps_voxel_indices_to_patient_positions():
    """Sagittal slices worked out by hand: rows run along +y, columns along -z, so the normal
    (row x column) is -x. PixelSpacing (0.7, 0.5) is (between rows, between columns); a slice
    origin steps 3 mm along the normal. Voxel (z, y, x) = (4, 10, 20) sits at
    (10, -4, 2) + 20 x 0.5 (0, 1, 0) + 10 x 0.7 (0, 0, -1) + 4 x 3 (-1, 0, 0) = (-2, 6, -5)."""
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    affine = np.asarray(stack_affine((10.0, -4.0, 2.0), sagittal, (0.7, 0.5), (-3.0, 0.0, 0.0)))
    assert np.allclose(affine @ (4, 10, 20, 1), (-2.0, 6.0, -5.0, 1.0))
    assert np.allclose(affine @ (0, 0, 0, 1), (10.0, -4.0, 2.0, 1.0))  # voxel 0 is the first origin


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 3000), cols=st.integers(1, 3000), fr=st.integers(16, 600), fc=st.integers(16, 600),
       data=st.data())
def test_tile_layout_covers_a_window_with_exactly_the_frames_it_meets(rows, cols, fr, fc, data):
    layout = TileLayout(rows, cols, fr, fc)
    r0, c0 = data.draw(st.integers(-100, rows)), data.draw(st.integers(-100, cols))
    window = Window(r0, c0, data.draw(st.integers(1, 700)), data.draw(st.integers(1, 700)))
    found = layout.frames_under(window)
    inside = window.intersection(Window(0, 0, rows, cols))
    covered = sum(part.intersection(inside).area for _, part in found) if inside else 0
    assert covered == (inside.area if inside else 0)  # frames tile the matrix without overlap
    for index, part in found:
        assert part.intersection(window) is not None
        assert (index // layout.frames_across, index % layout.frames_across) == (part.row // fr, part.col // fc)
        assert part.row_stop <= rows and part.col_stop <= cols
    assert len({i for i, _ in found}) == len(found) and all(0 <= i < layout.frame_count for i, _ in found)
