"""One run of the real DeepLabV3-ResNet101 (random weights) per source format, on small real files.

Everything about reading, geometry and bookkeeping is tested with the stand-in model elsewhere;
these runs prove that the real network goes through each format's whole path (its input
channels, scaling, output stride and class count) and yields a finished store whose labels are
the model's classes or the no-data label.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import rasterio

import tilepipe
from tests.conftest import shared_file
from tests.dicom_helpers import dicom_data
from tilepipe.sink import NO_LABEL

REAL = dict(model="deeplabv3_resnet101", weights="none", workers=1)


def finished_mask(out) -> np.ndarray:
    store = tilepipe.open(str(out))
    assert store.is_complete
    return store.mask[...]


def assert_labels(mask: np.ndarray, summary, valid: np.ndarray | None = None) -> None:
    classes = summary["model"]["num_classes"]
    assert summary["model"]["architecture"] == "deeplabv3_resnet101"
    assert summary["warnings"][0].startswith("RANDOM WEIGHTS")
    if valid is None:
        assert (mask < classes).all()
    else:
        assert (mask[valid] < classes).all() and (mask[~valid] == NO_LABEL).all()


@pytest.mark.real_model
def test_real_model_on_a_geotiff(tmp_path):
    path = shared_file("geotiff", "rmnp-rgb.tif")  # 485 x 373, nodata 255
    summary = tilepipe.run(str(path), str(tmp_path / "m.zarr"), tile_size=256, **REAL)
    mask = finished_mask(tmp_path / "m.zarr")
    with rasterio.open(path) as src:
        assert mask.shape == (src.height, src.width)
        valid = src.dataset_mask() > 0
    assert_labels(mask, summary, valid)


@pytest.mark.real_model
@pytest.mark.parametrize("where, shape", [
    (("series_mr_ge_epi",), (15, 64, 64)),  # a series folder, one file a slice
    (("multiframe", "emri_small.dcm"), (10, 64, 64)),  # an Enhanced MR multi-frame file
], ids=["series", "multi-frame"])
def test_real_model_on_dicom_planes(where, shape, tmp_path):
    summary = tilepipe.run(str(dicom_data(*where)), str(tmp_path / "m.zarr"), **REAL)
    mask = finished_mask(tmp_path / "m.zarr")
    assert mask.shape == shape
    assert_labels(mask, summary)


@pytest.mark.real_model
def test_real_model_on_a_whole_slide_level(tmp_path):
    folder = dicom_data("wsi_cmu1")
    # one 370 x 277 frame: the slide's reading path at a twelfth of the network's cost on level 2 (4
    # frames); reading a level frame by frame is tested with the stand-in (tests/test_dicom.py)
    level = pydicom.dcmread(folder / "level-3-frames-0-1.dcm", stop_before_pixels=True)
    summary = tilepipe.run(str(folder), str(tmp_path / "m.zarr"), level=3, **REAL)
    mask = finished_mask(tmp_path / "m.zarr")
    assert mask.shape[-2:] == (level.TotalPixelMatrixRows, level.TotalPixelMatrixColumns)
    assert_labels(mask, summary)
