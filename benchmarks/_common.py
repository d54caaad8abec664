"""Helpers shared by the benchmark scripts: build large test GeoTIFFs, and run tilepipe in a child
process to measure that run's own peak memory.

Run as a script, this file *is* the child: ``python _common.py '<json run kwargs>'`` calls
``tilepipe.run(**kwargs)`` and prints one JSON line. A child per run is needed because
``ru_maxrss`` is a high-water mark for the whole process: measured in the parent, the second run
would inherit the first run's peak (and the parent's own imports).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from tilepipe.testing import write_ct_series

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = HERE / "out"
SHARED_GEOTIFF = Path(__file__).resolve().parents[1] / "tests" / "data" / "geotiff"
SAMPLE_NAMES = ("RGB.byte.tif", "cogeo.tif")
MOSAIC_RECIPE = "mosaic-v1"
"""Stored as a tag in every built file; bump it when the recipe changes so stale caches are rebuilt."""


def load_samples() -> tuple[list[np.ndarray], dict]:
    """The RGB content of the shared real samples, cropped to a common cell size, plus the CRS and
    transform of the first one (so the mosaic is georeferenced like real data). Empty if absent."""
    arrays, georef = [], {}
    for name in SAMPLE_NAMES:
        path = SHARED_GEOTIFF / name
        if not path.exists():
            continue
        with rasterio.open(path) as ds:
            if ds.count < 3:
                continue
            arrays.append(ds.read([1, 2, 3]))
            georef = georef or {"crs": ds.crs, "transform": ds.transform}
    if not arrays:
        return [], {}
    h = min(a.shape[1] for a in arrays)
    w = min(a.shape[2] for a in arrays)
    return [np.ascontiguousarray(a[:, :h, :w]) for a in arrays], georef


def mosaic_window(samples: list[np.ndarray], row: int, col: int, height: int, width: int) -> np.ndarray:
    """Pixels (3, height, width) of an endless mosaic at (row, col).

    Cell (i, j) shows sample (i + j) % n, mirrored in odd rows/columns of cells so that edges
    between cells are continuous rather than hard seams the model would see as artificial edges.
    Without samples, a smooth synthetic pattern stands in."""
    rows = np.arange(row, row + height)
    cols = np.arange(col, col + width)
    if not samples:
        y, x = rows[:, None] / 97.0, cols[None, :] / 131.0
        bands = [np.sin(y + k) * np.cos(x - k) + 0.3 * np.sin((x + y) / 7 + k) for k in range(3)]
        return np.stack([((b + 1.3) * 98).clip(0, 255).astype(np.uint8) for b in bands])
    ch, cw = samples[0].shape[1:]
    ci, cj = rows // ch, cols // cw
    ri = np.where(ci % 2, ch - 1 - rows % ch, rows % ch)
    rj = np.where(cj % 2, cw - 1 - cols % cw, cols % cw)
    which = (ci[:, None] + cj[None, :]) % len(samples)
    out = np.empty((3, height, width), np.uint8)
    for k, sample in enumerate(samples):
        picked = sample[:, ri[:, None], rj[None, :]]
        np.copyto(out, picked, where=which == k)
    return out


def _is_built(path: Path, width: int, height: int) -> bool:
    if not path.exists():
        return False
    try:
        with rasterio.open(path) as ds:
            return (ds.width, ds.height) == (width, height) and ds.tags().get("recipe") == MOSAIC_RECIPE
    except rasterio.errors.RasterioError:
        return False


def _write_tiff(path: Path, width: int, height: int, georef: dict, fill) -> None:
    """Write a tiled, deflate-compressed 3-band uint8 GeoTIFF strip by strip, ``fill(row, col,
    h, w)`` giving each window; via a temporary name, so an interrupted build is never reused."""
    tile = 512
    tmp = path.with_name(path.name + ".partial")
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", tiled=True,
                   blockxsize=tile, blockysize=tile, compress="deflate", predictor=2,
                   num_threads="ALL_CPUS", BIGTIFF="IF_SAFER", **georef)
    strip_width = tile * 16  # at most 8192 x 512 x 3 bytes (12 MB) in memory per write
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.update_tags(recipe=MOSAIC_RECIPE)
        for row in range(0, height, tile):
            h = min(tile, height - row)
            for col in range(0, width, strip_width):
                w = min(strip_width, width - col)
                ds.write(fill(row, col, h, w), window=Window(col, row, w, h))
    os.replace(tmp, path)


def build_mosaic(workdir: Path, side: int) -> tuple[Path, bool]:
    """A ``side`` x ``side`` RGB mosaic GeoTIFF in ``workdir``, built once and reused.
    Returns (path, built_now)."""
    path = workdir / f"mosaic_{side}x{side}.tif"
    if _is_built(path, side, side):
        return path, False
    samples, georef = load_samples()
    workdir.mkdir(parents=True, exist_ok=True)
    _write_tiff(path, side, side, georef, lambda r, c, h, w: mosaic_window(samples, r, c, h, w))
    return path, True


def build_crop(source: Path, side: int) -> Path:
    """The top-left ``side`` x ``side`` window of ``source`` as its own file beside it, reused if built."""
    path = source.with_name(f"{source.stem}_crop{side}.tif")
    if _is_built(path, side, side):
        return path
    with rasterio.open(source) as src:
        georef = {"crs": src.crs, "transform": src.transform}
        _write_tiff(path, side, side, georef, lambda r, c, h, w: src.read(window=Window(c, r, w, h)))
    return path


def built_path(workdir: Path, side: int) -> Path:
    """The mosaic's path, failing clearly when ``--skip-build`` was given but it was never built."""
    path = workdir / f"mosaic_{side}x{side}.tif"
    if not _is_built(path, side, side):
        sys.exit(f"{path} is missing or stale; run without --skip-build to build it")
    return path


def build_series(workdir: Path, slices: int, size: int) -> Path:
    """A ``slices``-slice synthetic CT series of ``size``^2 px (:func:`tilepipe.testing.write_ct_series`),
    reused when a complete one is already there."""
    folder = workdir / f"ct_{size}px_{slices}slices"
    if folder.exists() and len(list(folder.glob("*.dcm"))) == slices:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    write_ct_series(folder, slices, size=size, spacing=1.25, description=f"benchmark CT {slices} slices")
    return folder


def run_child(**run_kwargs) -> dict:
    """``tilepipe.run(**run_kwargs)`` in a fresh Python process; returns the child's JSON report."""
    proc = subprocess.run([sys.executable, __file__, json.dumps(run_kwargs)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def announce() -> tuple[str, dict[str, str]]:
    """Print and return the exact command line and the library versions: every result is
    recorded with both."""
    from tilepipe.report.figures import library_versions  # imports torch: only once a benchmark runs

    command = shlex.join([sys.executable, *sys.argv])
    versions = library_versions()
    print(f"command: {command}")
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    return command, versions


def maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024  # Linux reports KiB


def proc_status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in bytes; None off Linux.
    ``VmHWM`` starts afresh at ``exec``, unlike ``ru_maxrss``, which a child started with
    ``subprocess`` inherits from the parent it was forked from."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _child(kwargs_json: str) -> None:
    import tilepipe
    import tilepipe.pipeline  # noqa: F401 - the API is imported lazily; load torch before the baseline

    baseline = maxrss_bytes()  # after importing torch and tilepipe, before any pixels
    summary = tilepipe.run(**json.loads(kwargs_json)).data
    plan, timing, engine = summary["plan"], summary["timing"], summary["engine"]
    print(json.dumps({
        "megapixels": summary["input"]["megapixels"],
        "megapixels_per_second": summary["throughput"]["megapixels_per_second"],
        "wall_seconds": timing["wall_seconds"],
        "setup_seconds": timing["sequential_seconds"]["setup"],
        "overlap_cost_factor": plan["overlap_cost_factor"],
        "blocks": plan["blocks"],
        "tiles_computed": plan["tiles_computed"],
        "lattice_tiles": plan["lattice_tiles"],
        "workers": summary["environment"]["workers"],
        "device": engine["device"],
        "device_name": engine["device_name"],
        "torch_threads": engine["torch_threads"],
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": maxrss_bytes(),
    }))


if __name__ == "__main__":
    _child(sys.argv[1])
