"""DICOM throughput: slices per second, megapixels per second and peak RSS on a generated CT series.

    python benchmarks/dicom_throughput.py                          # 100 and 300 slices of 512^2, real model on 3
    python benchmarks/dicom_throughput.py --slices 20 60 --real-slices 0   # quick check of the script

The series is CT-like (air, body, lungs, a bone ring; int16-range values with RescaleIntercept
-1024; one file per slice, written by pydicom through the tests' generator) and is built once per
size under ``--workdir``. Each run happens in its own child process (``_common.run_child``), so its
peak RSS is its own: the stand-in model on every size, then the real DeepLabV3-ResNet101 (random
weights, same cost as trained ones) on ``--real-slices`` slices. Memory must not grow with the
number of slices: the script checks that the largest run's peak RSS is within ``--rss-ratio``
(1.3) of the smallest run's, and exits 1 when it is not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _common import DEFAULT_WORKDIR, run_child

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_helpers import write_ct_series  # noqa: E402  (the tests' generator, shared rather than copied)

MB = 1e6


def build_series(workdir: Path, slices: int, size: int) -> Path:
    """A ``slices``-slice series of ``size``^2 px, reused when a complete one is already there."""
    folder = workdir / f"ct_{size}px_{slices}slices"
    if folder.exists() and len(list(folder.glob("*.dcm"))) == slices:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    write_ct_series(folder, slices, size=size, spacing=1.25, description=f"benchmark CT {slices} slices")
    return folder


def measure(series: Path, slices: int, size: int, model: str, workers: int, workdir: Path) -> dict:
    store = workdir / f"{series.name}_{model}.zarr"
    figures = run_child(input=str(series), output=str(store), model=model, weights="none", workers=workers,
                        overwrite=True)
    shutil.rmtree(store, ignore_errors=True)
    wall = figures["wall_seconds"]
    return {"slices": slices, "size": size, "model": model, **figures,
            "slices_per_second": round(slices / wall, 3) if wall else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[100, 300], help="series lengths for the stand-in runs")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels")
    parser.add_argument("--real-slices", type=int, default=3, help="slices for the real-model run (0 skips it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rss-ratio", type=float, default=1.3, help="allowed peak RSS ratio, largest over smallest run")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)

    runs = [measure(build_series(args.workdir, n, args.size), n, args.size, "standin", args.workers, args.workdir)
            for n in sorted(args.slices)]
    if args.real_slices:
        series = build_series(args.workdir, args.real_slices, args.size)
        runs.append(measure(series, args.real_slices, args.size, "deeplabv3_resnet101", args.workers, args.workdir))

    print(f"command: {' '.join(sys.argv)}")
    print(f"device: {runs[0]['device']} ({runs[0]['device_name']}), workers {args.workers}, "
          f"torch threads {runs[0]['torch_threads']}")
    print(f"{'model':<20} {'slices':>6} {'size':>5} {'wall s':>8} {'slices/s':>9} {'MP/s':>8} "
          f"{'after imports MB':>17} {'peak RSS MB':>12}")
    for r in runs:
        print(f"{r['model']:<20} {r['slices']:>6} {r['size']:>5} {r['wall_seconds']:>8.2f} {r['slices_per_second']:>9.2f} "
              f"{r['megapixels_per_second']:>8.3f} {r['baseline_rss_bytes'] / MB:>17.0f} {r['peak_rss_bytes'] / MB:>12.0f}")
    standin = [r for r in runs if r["model"] == "standin"]
    ratio = standin[-1]["peak_rss_bytes"] / standin[0]["peak_rss_bytes"]
    ok = ratio <= args.rss_ratio
    print(f"peak RSS {standin[-1]['slices']} vs {standin[0]['slices']} slices: ratio {ratio:.3f} "
          f"(target <= {args.rss_ratio}): {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "rss_ratio": ratio, "pass": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
