"""A fixed set of runs whose outputs must not change when the code is only reorganised.

Each run segments a real file from ``tests/data`` (or the bundled sample) with fixed options
and random weights (seed 0), then hashes every array of the store (the mask, probabilities,
pyramid levels, coordinates, the block records) and the geometry attributes. ``--save`` writes
the hashes to a JSON file; ``--check`` compares a later run with such a file and exits 1 on any
difference, naming the run and array. Use it around a refactor:

    git checkout <before> && python benchmarks/golden_runs.py --save /tmp/before.json
    git checkout <after>  && python benchmarks/golden_runs.py --check /tmp/before.json

Hashes are only comparable on one machine with one torch build (floating-point kernels differ
between CPUs), which is why this is a script and not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

import tilepipe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
STANDIN = {"model": "standin", "weights": "none"}
SMALL = {"tile_size": 128, "overlap": 32, "chunk_size": 128, "block_size": 256}

RUNS: dict[str, tuple[Path, dict]] = {
    "sample-default": (ROOT / "sample_data" / "rmnp-rgb.tif", STANDIN),
    "sample-crop-strips": (ROOT / "sample_data" / "rmnp-rgb.tif", {**STANDIN, **SMALL, "blending": "crop"}),
    "sample-probabilities": (ROOT / "sample_data" / "rmnp-rgb.tif", {**STANDIN, **SMALL, "probabilities": True}),
    "rgb-byte-nodata": (DATA / "geotiff" / "RGB.byte.tif", {**STANDIN, "tile_size": 256, "chunk_size": 256,
                                                            "block_size": 512}),
    "rgba-uint16-percentile": (DATA / "geotiff" / "RGBA.uint16.tif", {**STANDIN, **SMALL, "bands": (3, 2, 1),
                                                                        "scaling": "percentile"}),
    "landsat-1band-classes": (DATA / "geotiff" / "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF",
                              {**STANDIN, "num_classes": 5, "scaling": "100,20000"}),
    "float-nan": (DATA / "geotiff" / "float_nan.tif", {**STANDIN, "tile_size": 32, "overlap": 8, "chunk_size": 32}),
    "float-nodata": (DATA / "geotiff" / "float_raster_with_nodata.tif", {**STANDIN, "tile_size": 32, "overlap": 8,
                                                                         "chunk_size": 32}),
    "cog-real-arch-os16": (DATA / "geotiff" / "cogeo.tif", {"model": "deeplabv3_resnet101", "weights": "none",
                                                            "output_stride": 16, "tile_size": 256, "overlap": 32,
                                                            "chunk_size": 256, "block_size": 512, "bands": (1, 2, 3)}),
    "ct-window": (DATA / "dicom" / "single" / "CT_small.dcm", {**STANDIN, "window": "soft-tissue", "tile_size": 64,
                                                              "overlap": 16, "chunk_size": 64}),
    "mr-series": (DATA / "dicom" / "series_mr_ge_epi", {**STANDIN, "tile_size": 32, "overlap": 8, "chunk_size": 32}),
    "enhanced-mprage": (DATA / "dicom" / "enhanced" / "philips_mprage.dcm", {**STANDIN, "tile_size": 128,
                                                                            "chunk_size": 128}),
    "dwi-4d": (DATA / "dicom" / "four_d_dwi", STANDIN),
    "dwi-4d-select": (DATA / "dicom" / "four_d_dwi", {**STANDIN, "select": "AcquisitionNumber=2"}),
    "ultrasound-rgb-frames": (DATA / "dicom" / "multiframe" / "examples_ybr_color.dcm", {**STANDIN, **SMALL}),
    "wsi-level1": (DATA / "dicom" / "wsi_cmu1", {**STANDIN, "level": 1, "tile_size": 256, "chunk_size": 256}),
    "wsi-lraspp": (DATA / "dicom" / "wsi_cmu1", {"model": "lraspp_mobilenet_v3_large", "weights": "none",
                                                 "level": 2, "tile_size": 256, "chunk_size": 256}),
}


def store_hashes(url: str) -> dict[str, str]:
    """sha256 of every array's values (with its shape and dtype) and of the non-run attributes."""
    group = zarr.open_group(url, mode="r")
    out = {}

    def visit(g, prefix=""):
        for name, member in sorted(g.members()):
            if isinstance(member, zarr.Group):
                visit(member, f"{prefix}{name}/")
            else:
                values = np.ascontiguousarray(member[...])
                digest = hashlib.sha256(f"{values.shape}{values.dtype}".encode() + values.tobytes()).hexdigest()
                out[f"{prefix}{name}"] = digest

    visit(group)
    attrs = {k: v for k, v in group.attrs.asdict().items() if k != "tilepipe"}
    out["attrs"] = hashlib.sha256(json.dumps(attrs, sort_keys=True, default=str).encode()).hexdigest()
    return out


def run_all(names: list[str]) -> dict[str, dict[str, str]]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path, options = RUNS[name]
            if not path.exists():
                print(f"{name}: skipped, {path} not found", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            store = f"{tmp}/{name}.zarr"
            tilepipe.run(str(path), store, **options)
            results[name] = store_hashes(store)
            print(f"{name}: {len(results[name])} hashes, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--save", type=Path, help="write the hashes to this JSON file")
    what.add_argument("--check", type=Path, help="compare with the hashes in this JSON file")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="a subset of the runs")
    args = parser.parse_args()
    results = run_all(args.only or list(RUNS))
    if args.save:
        args.save.write_text(json.dumps(results, indent=1, sort_keys=True))
        print(json.dumps({"runs": len(results), "saved": str(args.save)}))
        return 0
    expected = json.loads(args.check.read_text())
    differ = [f"{run}/{key}" for run in sorted(results) for key in sorted(set(results[run]) | set(expected.get(run, {})))
              if results[run].get(key) != expected.get(run, {}).get(key)]
    missing = sorted(set(expected) - set(results))
    print(json.dumps({"runs": len(results), "identical": not differ and not missing, "differ": differ,
                      "not_run": missing}, indent=1))
    return 1 if differ or missing else 0


if __name__ == "__main__":
    sys.exit(main())
