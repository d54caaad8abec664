"""Peak memory along a DICOM series: does it stay flat with the slice count, and does the plan's
estimate (``tilepipe plan``, :func:`tilepipe.sizing.estimate_peak_memory`) match it?

    python benchmarks/series_memory.py                           # 128 and 512 slices of 512 px, 64 of 1024 px
    python benchmarks/series_memory.py --cases 128x512 64x1024   # what fits the time you have

Each case is a synthetic CT series (``_common.build_series``, built once under ``--workdir``)
segmented by the stand-in model (or ``--model``, with random weights) with ``--classes`` classes
(21, the VOC head's count: the blending buffers and probabilities scale with it), in a fresh child process
(``_common.run_child``), so its peak RSS (``ru_maxrss``) is its own. The script prints each case's
measured peak, the plan's estimate for the same options and their ratio, then checks the targets
of issue 18: every peak at most ``--max-peak-gb``, the longest series of a slice size within
``--flat-ratio`` of the shortest, the estimate within ``--estimate-ratio`` of the measured peak
either way. It exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import tilepipe
from _common import DEFAULT_WORKDIR, announce, build_series, run_child

GB = 1e9
MB = 1e6


def case(text: str) -> tuple[int, int]:
    """``SLICESxSIZE``, e.g. ``128x512``."""
    slices, _, size = text.partition("x")
    return int(slices), int(size)


def measure(workdir: Path, slices: int, size: int, options: dict) -> dict:
    series = build_series(workdir, slices, size)
    store = workdir / f"{series.name}_memory.zarr"
    estimate_mb = tilepipe.plan(str(series), **options)["estimated_peak_memory_mb"]  # MiB
    figures = run_child(input=str(series), output=str(store), overwrite=True, **options)
    shutil.rmtree(store, ignore_errors=True)
    peak, estimate = figures["peak_rss_bytes"], estimate_mb * 2**20
    return {"slices": slices, "size": size, **figures, "estimated_peak_bytes": estimate,
            "estimate_over_peak": round(estimate / peak, 3),
            "seconds_per_slice": round(figures["wall_seconds"] / slices, 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=case, nargs="+", default=[(128, 512), (512, 512), (64, 1024)],
                        help="series as SLICESxSIZE")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--model", default="standin", help="e.g. deeplabv3_resnet101 (random weights; slow on a CPU)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-peak-gb", type=float, default=1.5)
    parser.add_argument("--flat-ratio", type=float, default=1.15)
    parser.add_argument("--estimate-ratio", type=float, default=1.25)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    announce()
    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    options = {"model": args.model, "weights": "none", "num_classes": args.classes, "workers": args.workers}
    runs = []
    for slices, size in args.cases:
        runs.append(measure(args.workdir, slices, size, options))
        print(json.dumps(runs[-1]), flush=True)

    print(f"\n{args.model}, {args.classes} classes, workers {args.workers}, device {runs[0]['device']}")
    print(f"{'slices':>6} {'size':>5} {'wall s':>8} {'s/slice':>8} {'after imports MB':>17} {'peak RSS MB':>12} "
          f"{'estimate MB':>12} {'estimate/peak':>14}")
    for r in runs:
        print(f"{r['slices']:>6} {r['size']:>5} {r['wall_seconds']:>8.1f} {r['seconds_per_slice']:>8.3f} "
              f"{r['baseline_rss_bytes'] / MB:>17.0f} {r['peak_rss_bytes'] / MB:>12.0f} "
              f"{r['estimated_peak_bytes'] / MB:>12.0f} {r['estimate_over_peak']:>14.3f}")

    checks = []
    for r in runs:
        checks.append((f"{r['slices']}x{r['size']} peak {r['peak_rss_bytes'] / GB:.3f} GB <= {args.max_peak_gb} GB",
                       r["peak_rss_bytes"] <= args.max_peak_gb * GB))
        ratio = r["estimate_over_peak"]
        checks.append((f"{r['slices']}x{r['size']} estimate/peak {ratio:.3f} within {args.estimate_ratio}x",
                       1 / args.estimate_ratio <= ratio <= args.estimate_ratio))
    for size in sorted({r["size"] for r in runs}):
        same = sorted((r for r in runs if r["size"] == size), key=lambda r: r["slices"])
        if len(same) > 1:
            ratio = same[-1]["peak_rss_bytes"] / same[0]["peak_rss_bytes"]
            checks.append((f"{size} px: peak of {same[-1]['slices']} over {same[0]['slices']} slices {ratio:.3f} "
                           f"<= {args.flat_ratio}", ratio <= args.flat_ratio))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    passed = all(ok for _, ok in checks)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "checks": [{"check": t, "pass": ok} for t, ok in checks],
                                         "pass": passed}, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
