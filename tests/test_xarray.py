"""The store as other tools see it: xarray opens it with the source's pixel-centre coordinates and
rioxarray finds its CRS; and the CLI writes byte for byte the store the Python API writes."""

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr
import zarr
from click.testing import CliRunner

import tilepipe
from tests.conftest import shared_file
from tilepipe.cli import main

SCENES = {"rgb": "RGB.byte.tif", "landsat": "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF"}
OPTIONS = {"tile_size": 256, "overlap": 32, "chunk_size": 256, "block_size": 512}
"""Not the defaults, so the CLI-versus-API comparison shows the flags arrive."""


@pytest.fixture(scope="module", params=sorted(SCENES))
def api_run(request, tmp_path_factory):
    """``(input, store)`` of a stand-in run through the Python API."""
    source = shared_file("geotiff", SCENES[request.param])
    store = tmp_path_factory.mktemp(request.param) / "api.zarr"
    tilepipe.run(str(source), str(store), model="standin", weights="none", **OPTIONS)
    return source, store


# rioxarray's own Affine arithmetic warns under affine >= 2.4; not ours to fix
@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
def test_xarray_coordinates_are_the_source_pixel_centres(api_run):
    source, store = api_run
    ds = xr.open_zarr(store, consolidated=False)
    with rasterio.open(source) as ref:
        assert ds.mask.dims == ("y", "x") and ds.mask.shape == (ref.height, ref.width)
        # rasterio's own pixel centres (offset "center"), for every column of row 0 and every row of column 0
        x, _ = rasterio.transform.xy(ref.transform, np.zeros(ref.width, int), np.arange(ref.width))
        _, y = rasterio.transform.xy(ref.transform, np.arange(ref.height), np.zeros(ref.height, int))
        np.testing.assert_allclose(ds.x.values, x)
        np.testing.assert_allclose(ds.y.values, y)
        assert ds.mask.rio.crs == ref.crs
        assert ds.mask.rio.transform().almost_equals(ref.transform)


def test_cli_and_api_write_identical_stores(api_run, tmp_path):
    source, api_store = api_run
    cli_store = tmp_path / "cli.zarr"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in OPTIONS.items()]
    result = CliRunner().invoke(main, ["run", str(source), "-o", str(cli_store), "--model", "standin",
                                       "--weights", "none", "-q", *flags])
    assert result.exit_code == 0, result.output
    cli, api = (zarr.open_group(str(s), mode="r") for s in (cli_store, api_store))
    assert cli["mask"][...].tobytes() == api["mask"][...].tobytes()
    assert cli["mask"].shape == api["mask"].shape
    assert cli.attrs["tilepipe"]["options"] == api.attrs["tilepipe"]["options"]
    assert cli.attrs["tilepipe"]["options"]["tile_size"] == OPTIONS["tile_size"]
