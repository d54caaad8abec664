"""Draw ``docs/polygons.png``, the README's picture of an exported polygon layer over its scene.

Segments the sample scene ``sample_data/rmnp-rgb.tif`` (Landsat RGB of Rocky Mountain National
Park, EPSG:4326) with the stand-in model (random weights: a colour-based split of the scene into
4 classes, enough to show what the export gives, not a land-cover map), exports the regions with
``tilepipe export --to geoparquet --min-area ... --simplify ...`` through the Python API, reads
them back with GeoPandas and draws them, filled in the class colours, over part of the scene, with
the summary's measures of the whole scene in the legend.

    python docs/polygons_picture.py            # writes docs/polygons.png
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402
from rasterio.plot import show  # noqa: E402

import tilepipe  # noqa: E402
from tilepipe.exporters import export  # noqa: E402
from tilepipe.exporters.colors import PALETTE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "sample_data" / "rmnp-rgb.tif"
OUT = ROOT / "docs" / "polygons.png"
MIN_AREA = 5e-5   # square degrees: about 25 pixels of the scene (0.0015° a side), about 40 ha at 40°N
SIMPLIFY = 1.5e-3  # degrees: about one pixel's side
ZOOM = (-105.97, -105.72, 40.08, 40.28)  # lon/lat window drawn: the polygons of the whole scene are too small to see


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = f"{tmp}/rmnp.zarr"
        summary = tilepipe.run(str(SCENE), store, model="standin", weights="none")
        layer = gpd.read_parquet(export(store, "geoparquet", f"{tmp}/rmnp.parquet", min_area=MIN_AREA,
                                        simplify=SIMPLIFY))
    fig, ax = plt.subplots(figsize=(8, 6.6), dpi=80)
    with rasterio.open(SCENE) as ds:
        show(ds.read([1, 2, 3]), transform=ds.transform, ax=ax)
    colours = {c: PALETTE[c] / 255 for c in layer.class_id.unique()}
    layer.plot(ax=ax, color=[colours[c] for c in layer.class_id], alpha=0.35, linewidth=0)
    layer.boundary.plot(ax=ax, color=[colours[c] for c in layer.class_id], linewidth=0.6)
    measures = {c["id"]: c for c in summary["measures"]["classes"]}
    ax.legend(handles=[Patch(color=colours[c], label=f"{measures[c]['name']}: {measures[c]['area_ha']:,.0f} ha, "
                             f"{(layer.class_id == c).sum()} polygons") for c in sorted(colours)],
              loc="upper right", fontsize=8, framealpha=0.85, title="class: area in the whole scene")
    ax.set_title(f"tilepipe export --to geoparquet: {len(layer):,} polygons in {layer.crs.to_string()} (part shown)\n"
                 f"stand-in model, --min-area {MIN_AREA:g} --simplify {SIMPLIFY:g}; areas from the run summary",
                 fontsize=10)
    ax.set_xlim(*ZOOM[:2])
    ax.set_ylim(*ZOOM[2:])
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    fig.tight_layout()
    drawn = io.BytesIO()
    fig.savefig(drawn, format="png")
    Image.open(drawn).convert("RGB").quantize(128).save(OUT, optimize=True)  # a quarter of the size, kept in git
    print(OUT)


if __name__ == "__main__":
    main()
