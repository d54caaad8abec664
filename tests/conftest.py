"""Shared fixtures: the real sample files in ``tests/data``, and small files made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

SHARED = Path(__file__).resolve().parent / "data"
"""The real sample files the suite carries (their sources and licences: ``tests/data/SOURCES.md``)."""
GEOTIFFS = SHARED / "geotiff"


def shared_file(*parts: str) -> Path:
    """A real sample file under ``tests/data``. A missing one fails the test: a suite that skipped
    its real files would pass on a clone that lost them."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real sample file missing: {path} (see tests/data/SOURCES.md)", pytrace=False)
    return path


def write_geotiff(path: Path, data: np.ndarray, nodata=None, crs="EPSG:32618", **profile) -> Path:
    """A small GeoTIFF from a (bands, h, w) array, for tests that need a controlled input."""
    bands, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype,
                       crs=crs, transform=from_origin(500000.0, 4200000.0, 30.0, 30.0), nodata=nodata,
                       **profile) as dst:
        dst.write(data)
    return path


def smooth_image(height: int, width: int, bands: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A deterministic image with structure at several scales (random noise would be too easy to tile)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((bands, height, width), np.float32)
    for b in range(bands):
        fx, fy, phase = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.28)]
        out[b] = 0.5 + 0.35 * np.sin(xx * fx + phase) * np.cos(yy * fy) + 0.15 * rng.random((height, width))
    scale = 255 if dtype == np.uint8 else 4000
    return np.clip(out * scale, 0, scale).astype(dtype)


@pytest.fixture
def tmp_tif(tmp_path):
    def make(name="img.tif", data=None, **kwargs):
        data = smooth_image(300, 400) if data is None else data
        return write_geotiff(tmp_path / name, data, **kwargs)
    return make


@pytest.fixture
def offline_weights(monkeypatch, tmp_path):
    """torchvision's weight downloads fail as they do without network, into an empty TORCH_HOME."""
    from urllib.error import URLError

    import torchvision.models._api as weights_api

    def offline(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
