"""How close tilepipe gets to the model's own ceiling, and how it compares with a naive loop and
with MONAI's ``sliding_window_inference``, in one process, on one generated GeoTIFF (``--size``
square RGB uint8, tiled, deflate; built once by ``_common.build_mosaic``).

Modes (one per run; the measuring code they share is ``measure.py``):

* default (``side_by_side.py``): ceiling, tilepipe, naive loop (``baselines.py``) and MONAI with the
  same tile size, overlap, batch size and precision; ``--output-stride 8,16`` repeats all four at
  each stride in the same process and prints one table of both;
* ``--host-only`` (``host_side.py``): the host side of a GPU run, without the model;
* ``--stride-tradeoff`` (``stride_tradeoff.py``): output stride 8 against 16 on a small crop.

    python benchmarks/throughput.py                                  # 16384^2; real model on CUDA, stand-in on CPU
    python benchmarks/throughput.py --size 2048 --skip naive         # a quick check
    python benchmarks/throughput.py --size 8192 --precision bf16 --output-stride 8,16 --naive-limit 64
    python benchmarks/throughput.py --host-only --size 4096
    python benchmarks/throughput.py --stride-tradeoff --tradeoff-crop 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import DEFAULT_WORKDIR, announce, build_mosaic  # noqa: E402
from host_side import host_only  # noqa: E402
from measure import process_peak_rss  # noqa: E402
from side_by_side import compare, stride_table  # noqa: E402
from stride_tradeoff import stride_tradeoff  # noqa: E402
from tilepipe.device import cpu_name, resolve_device  # noqa: E402
from tilepipe.model import architecture  # noqa: E402
from tilepipe.options import RunOptions  # noqa: E402

SKIPPABLE = ("ceiling", "naive", "monai")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("deeplabv3_resnet101", "standin"),
                   help="default: deeplabv3_resnet101 on CUDA, standin on the CPU")
    p.add_argument("--weights", default="none", help="default none (random: costs what trained weights cost)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--size", type=int, default=16384, help="side of the generated image (default 16384)")
    p.add_argument("--tile-size", type=int, default=512, help="default 512")
    p.add_argument("--overlap", type=int, default=64, help="tilepipe's tile overlap in px (default 64)")
    p.add_argument("--block-size", type=int, default=RunOptions.block_size,
                   help=f"tilepipe's strip width limit (default {RunOptions.block_size}, tilepipe's default)")
    p.add_argument("--chunk-size", type=int, default=512, help="default 512")
    p.add_argument("--batch-size", default="4", help="tiles per forward pass, or auto (default 4, tilepipe's default)")
    p.add_argument("--precision", default="auto", help="auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--workers", type=int, default=2, help="tilepipe workers; host-only threads (default 2)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (all measurements)")
    p.add_argument("--output-stride", default="", help="DeepLabV3's output stride: 8 (default), 16, or 8,16 to compare "
                                                       "both side by side in one process")
    p.add_argument("--skip", default="", help=f"comma-separated, of {','.join(SKIPPABLE)}")
    p.add_argument("--naive-limit", type=int, help="run the naive loop on this many tiles, spread over the image, "
                                                  "and extrapolate (default: every tile)")
    p.add_argument("--monai-crop", type=int, help="side of the MONAI crop (default: the largest that fits --monai-max-gb)")
    p.add_argument("--monai-max-gb", type=float, help="memory MONAI's whole-crop arrays may take, in GB (default: 40%% "
                                                      "of the memory available where they live, host or GPU)")
    p.add_argument("--monai-overlap", type=float, default=0.25, help="MONAI's overlap fraction (default 0.25)")
    p.add_argument("--ceiling-seconds", type=float, default=5.0, help="least timed seconds for the ceiling (default 5)")
    p.add_argument("--host-only", action="store_true", help="measure the host side of a GPU run (issue 6 CPU target)")
    p.add_argument("--profile-blocks", type=int, default=4, help="host-only: blocks in the single-thread profile (default 4)")
    p.add_argument("--repeat", type=int, default=3, help="host-only: timed runs of each variant; the median counts (default 3)")
    p.add_argument("--stride-tradeoff", action="store_true", help="output stride 8 vs 16 with the real model")
    p.add_argument("--tradeoff-crop", type=int, help="side of the stride trade-off crop (default 512 on CPU, 2048 on CUDA)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"images and stores (default {DEFAULT_WORKDIR})")
    p.add_argument("--json", type=Path, help="also write the final JSON here")
    p.add_argument("--table", type=Path, help="default mode: also write the side-by-side table (markdown) here")
    args = p.parse_args(argv)
    if args.host_only and args.stride_tradeoff:
        p.error("--host-only and --stride-tradeoff are separate modes; give one")
    try:
        args.output_strides = [int(s) for s in args.output_stride.split(",") if s.strip()] or [None]
    except ValueError:
        p.error(f"--output-stride {args.output_stride!r}: 8, 16 or 8,16")
    if not set(args.output_strides) <= {8, 16, None}:
        p.error(f"--output-stride {args.output_stride!r}: 8, 16 or 8,16")
    if len(args.output_strides) > 1 and (args.host_only or args.stride_tradeoff):
        p.error("several output strides are compared in the default mode only")
    args.output_stride = args.output_strides[0]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    bad = args.skip - set(SKIPPABLE)
    if bad:
        p.error(f"--skip {','.join(sorted(bad))}: choose from {','.join(SKIPPABLE)}")
    if args.batch_size != "auto":
        try:
            args.batch_size = int(args.batch_size)
        except ValueError:
            p.error(f"--batch-size {args.batch_size!r}: a positive integer or auto")
    args.device_obj = resolve_device(args.device)
    args.cuda = args.device_obj.type == "cuda"
    if args.model is None:
        args.model = "deeplabv3_resnet101" if args.cuda else "standin"
    if args.tradeoff_crop is None:
        args.tradeoff_crop = 2048 if args.cuda else 512
    args.workdir = args.workdir.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command, versions = announce()
    try:
        import monai

        versions["monai"] = monai.__version__
    except ImportError:
        versions["monai"] = "not installed"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device_name = torch.cuda.get_device_name(args.device_obj) if args.cuda else cpu_name()
    load_start = os.getloadavg()
    print(f"monai {versions['monai']}; date: {started}")
    print(f"device: {args.device_obj} ({device_name}); cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"load average at start {load_start[0]:.2f}", flush=True)
    if "monai" not in args.skip and versions["monai"] == "not installed" and not (args.host_only or args.stride_tradeoff):
        sys.exit("MONAI is not installed: pip install 'monai>=1.6.1' (or the bench extra), or pass --skip monai")

    t = time.perf_counter()
    image, built = build_mosaic(args.workdir, args.size)
    print(f"image {args.size} x {args.size}: {image} ({'built in %.1f s' % (time.perf_counter() - t) if built else 'cached'}, "
          f"{image.stat().st_size / 1e6:.0f} MB)", flush=True)

    if args.host_only:
        mode, results = "host-only", host_only(args, image)
    elif args.stride_tradeoff:
        mode, results = "stride-tradeoff", stride_tradeoff(args, image)
    elif len(args.output_strides) == 1:
        mode, results = "compare", compare(args, image)
    else:
        mode, per_stride = "compare-strides", {}
        strides = architecture(args.model).output_strides
        for stride in args.output_strides:
            print(f"\n######## output stride {stride}", flush=True)
            own = stride in strides
            if not own:  # the stand-in (stride 1) in --cpu-smoke: the loop runs, the stride cannot change
                print(f"{args.model} has output stride {' or '.join(map(str, strides))} only: this pass runs at "
                      f"its own stride (a check that the loop runs, not a stride comparison)", flush=True)
            per_stride[stride] = compare(argparse.Namespace(**{**vars(args), "output_stride": stride if own else None}),
                                         image)
            per_stride[stride]["ran_at_output_stride"] = stride if own else strides[0]
        table = stride_table(per_stride)
        print("\n" + "\n".join(table), flush=True)
        if args.table:
            args.table.write_text("\n".join(table) + "\n")
        results = {f"output_stride_{s}": r for s, r in per_stride.items()}

    blob = {
        "benchmark": "throughput",
        "mode": mode,
        "command": command,
        "date": started,
        "device": str(args.device_obj),
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "libraries": versions,
        "settings": {"model": args.model, "weights": args.weights, "size": args.size, "tile_size": args.tile_size,
                     "overlap": args.overlap, "block_size": args.block_size, "chunk_size": args.chunk_size,
                     "batch_size": args.batch_size, "precision": args.precision, "workers": args.workers,
                     "compile": args.compile, "output_strides": args.output_strides, "skip": sorted(args.skip)},
        "process_peak_rss_bytes": process_peak_rss(),
        **results,
    }
    text = json.dumps(blob, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if mode == "host-only":
        return 0 if results["host_only"]["pass"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
