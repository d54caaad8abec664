"""Whole-slide levels that are not TILED_FULL: frames placed where their own per-frame positions
say, never by their order. The oracle places each frame pydicom decodes at the
PlanePositionSlideSequence read back from the file here."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

import tilepipe
from tilepipe.cli import main
from tilepipe.grid import Window
from tilepipe.sink import NO_LABEL
from tilepipe.sources import SourceSpec, open_source
from tilepipe.testing import write_slide

ROWS, COLUMNS, FRAME = 300, 420, 128
"""3 x 4 frames, the last row and column of them cut by the matrix's edge."""


def placed_by_pydicom(path) -> tuple[np.ndarray, np.ndarray]:
    """The total pixel matrix and its coverage, every frame pasted at its stated 1-based position."""
    ds = pydicom.dcmread(path)
    image = np.zeros((int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns), 3), np.uint8)
    covered = np.zeros(image.shape[:2], bool)
    for frame, item in zip(ds.pixel_array, ds.PerFrameFunctionalGroupsSequence):
        place = item.PlanePositionSlideSequence[0]
        r, c = int(place.RowPositionInTotalImagePixelMatrix) - 1, int(place.ColumnPositionInTotalImagePixelMatrix) - 1
        h, w = min(FRAME, image.shape[0] - r), min(FRAME, image.shape[1] - c)
        image[r:r + h, c:c + w], covered[r:r + h, c:c + w] = frame[:h, :w], True
    return image, covered


@pytest.mark.parametrize("organization", ["TILED_SPARSE", None])
def test_shuffled_sparse_frames_are_placed_by_their_positions(tmp_path, organization):
    path = write_slide(tmp_path / "sparse.dcm", ROWS, COLUMNS, FRAME, organization, leave_out=((1, 2),), seed=3)
    expected, covered = placed_by_pydicom(path)
    assert not covered.all()  # one frame really is missing
    source = open_source(SourceSpec(path=str(path)))
    for window in (Window(0, 0, ROWS, COLUMNS), Window(100, 200, 150, 170), Window(250, 380, 50, 40)):
        pixels, valid = source.read(window)
        rows, cols = slice(window.row, window.row_stop), slice(window.col, window.col_stop)
        assert np.array_equal(valid, covered[rows, cols])
        assert np.array_equal(pixels.transpose(1, 2, 0)[valid], expected[rows, cols][valid])
    assert "placed by per-frame positions" in source.describe()["layout"]


def test_a_sparse_slide_runs_with_no_data_where_no_frame_is(tmp_path):
    path = write_slide(tmp_path / "sparse.dcm", ROWS, COLUMNS, FRAME, leave_out=((0, 0), (2, 3)), seed=1)
    _, covered = placed_by_pydicom(path)
    tilepipe.run(str(path), str(tmp_path / "mask.zarr"), model="standin", weights="none")
    mask = tilepipe.open(tmp_path / "mask.zarr").mask[...]
    assert mask.shape == (ROWS, COLUMNS)
    assert (mask[~covered] == NO_LABEL).all() and (mask[covered] != NO_LABEL).all()


@pytest.mark.parametrize("organization", ["TILED_SPARSE", None])
def test_frames_without_positions_are_refused_in_one_line(tmp_path, organization):
    path = write_slide(tmp_path / "unplaced.dcm", ROWS, COLUMNS, FRAME, organization, seed=2, positions=False)
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "out.zarr"), "--model", "standin",
                                       "--weights", "none", "-q"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert str(path) in line and "PlanePositionSlideSequence" in line and "TILED_FULL" in line
    assert not (tmp_path / "out.zarr").exists()


def test_a_tiled_full_level_still_reads_by_arithmetic(tmp_path):
    path = write_slide(tmp_path / "full.dcm", ROWS, COLUMNS, FRAME, "TILED_FULL", seed=None)
    expected, covered = placed_by_pydicom(path)
    pixels, valid = open_source(SourceSpec(path=str(path))).read(Window(0, 0, ROWS, COLUMNS))
    assert covered.all() and valid.all() and np.array_equal(pixels.transpose(1, 2, 0), expected)
