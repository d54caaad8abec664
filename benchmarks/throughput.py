"""Issue 6's benchmark: how close tilepipe gets to the model's own ceiling, and how it compares
with a naive loop and with MONAI's ``sliding_window_inference``, in one process, on one image.

Default mode, on one generated GeoTIFF (``--size`` square RGB uint8, tiled, deflate; built once by
``_common.build_mosaic``) with one tile size, overlap and precision:

1. **ceiling**: the bare network on random batches already on the device (channels_last,
   autocast at the run's precision, inference mode, warm-up excluded, synchronised), in tile
   megapixels per second at tilepipe's batch size;
2. **tilepipe**: ``tilepipe.run`` GeoTIFF -> Zarr on local disk, figures from its summary;
3. **naive**: rasterio reads a tile, the network runs it (batch 1, fp32, no overlap, a fresh NCHW
   copy of the same model, cuDNN autotuning off), the argmax goes into a zarr array, tile after
   tile (``--naive-limit`` runs a spread subset and extrapolates, and says so);
4. **MONAI**: read the largest crop that fits ``--monai-max-gb`` (or ``--monai-crop``) whole,
   ``sliding_window_inference`` over it (overlap 0.25, gaussian, ``sw_batch_size`` = tilepipe's
   batch, roi = tile, same precision, same normalisation and softmax), argmax, write to zarr;
   and tilepipe on the same crop, for the ratio.

``--host-only``: the host side of a GPU run (read + decode, normalise with
``tilepipe.blocks.tile_inputs``, write a uint8 mask with ``MaskStore.write_block``) on ``--workers``
threads with no model and no blending, against the 30 MP/s target; a single-threaded profile
that splits read, decode, normalise and write; and tilepipe end to end with the stand-in on the
CPU (CPU blending).

``--stride-tradeoff``: DeepLabV3-ResNet101 at output stride 8 and 16 on a small crop: MP/s of
each, multiply-adds per tile, and the pixel agreement of the two masks (random weights with
BatchNorm statistics calibrated on the image: a diagnostic, not an accuracy figure).

    python benchmarks/throughput.py                                  # 16384^2; real model on CUDA, stand-in on CPU
    python benchmarks/throughput.py --size 2048 --skip naive         # a quick check
    python benchmarks/throughput.py --host-only --size 4096
    python benchmarks/throughput.py --stride-tradeoff --tradeoff-crop 256
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_WORKDIR, _maxrss_bytes, build_crop, build_mosaic  # noqa: E402

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import torch  # noqa: E402
import zarr  # noqa: E402
from rasterio.windows import Window as RioWindow  # noqa: E402

import tilepipe  # noqa: E402
from tilepipe.blocks import tile_inputs, tile_pixels  # noqa: E402
from tilepipe.engine import PRECISIONS, EngineOptions, cpu_name, cached_engine, resolve_device  # noqa: E402
from tilepipe.grid import Plan, TileGrid, Window  # noqa: E402
from tilepipe.model import ModelSpec, cached_model, load_model  # noqa: E402
from tilepipe.pipeline import prepare, resolve_options  # noqa: E402
from tilepipe.sink import NO_LABEL, MaskStore  # noqa: E402
from tilepipe.sources import SourceSpec, open_source  # noqa: E402
from tilepipe.sources.geotiff import GeoTiffSource  # noqa: E402
from tilepipe.stitch import first_argmax  # noqa: E402
from tilepipe.summary import library_versions  # noqa: E402

HOST_TARGET_MPS = 30.0
SKIPPABLE = ("ceiling", "naive", "monai")
MB = 1e6


# --------------------------------------------------------------------------- options

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("deeplabv3_resnet101", "standin"),
                   help="default: deeplabv3_resnet101 on CUDA, standin on the CPU")
    p.add_argument("--weights", default="none", help="default none (random: costs what trained weights cost)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--size", type=int, default=16384, help="side of the generated image (default 16384)")
    p.add_argument("--tile-size", type=int, default=512, help="default 512")
    p.add_argument("--overlap", type=int, default=64, help="tilepipe's tile overlap in px (default 64)")
    p.add_argument("--block-size", type=int, default=2048, help="default 2048")
    p.add_argument("--chunk-size", type=int, default=512, help="default 512")
    p.add_argument("--batch-size", default="4", help="tiles per forward pass, or auto (default 4, tilepipe's default)")
    p.add_argument("--precision", default="auto", help="auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--workers", type=int, default=2, help="tilepipe workers; host-only threads (default 2)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (all measurements)")
    p.add_argument("--output-stride", type=int, choices=(8, 16), help="DeepLabV3's output stride (default 8)")
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
    args = p.parse_args(argv)
    if args.host_only and args.stride_tradeoff:
        p.error("--host-only and --stride-tradeoff are separate modes; give one")
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


def run_kwargs(args, **changes) -> dict:
    """The tilepipe options every measurement shares (``changes`` override them)."""
    kwargs = dict(model=args.model, weights=args.weights, output_stride=args.output_stride, device=args.device,
                  precision=args.precision, batch_size=args.batch_size, compile=args.compile, workers=args.workers,
                  tile_size=args.tile_size, overlap=args.overlap, block_size=args.block_size,
                  chunk_size=args.chunk_size, overwrite=True)
    kwargs.update(changes)
    return kwargs


# --------------------------------------------------------------------------- memory and timing

def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset Linux's resident high-water mark (VmHWM) to the current RSS: ``clear_refs`` 5."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_bytes("VmHWM") is not None
    except OSError:
        return False


PHASE_PEAKS: list[int] = []


def process_peak_rss() -> int:
    """The process's peak RSS over the whole benchmark. Resetting VmHWM also lowers what
    ``ru_maxrss`` reports afterwards (Linux takes the larger of the two), so the phases' own
    peaks are kept and the largest of them and ``ru_maxrss`` is the process-wide figure."""
    return max([_maxrss_bytes(), *PHASE_PEAKS])


class Phase:
    """Wall time, peak host RSS and peak device memory of one measurement.

    Host: where Linux lets a process reset its high-water mark, the peak is this phase's own
    (VmHWM after a reset at the start, which still counts what was resident then: Python, torch,
    the model); elsewhere it is ``ru_maxrss``, the process's high-water mark since it started.
    Device: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.own_peak = _reset_peak_rss()
        self.rss_at_start = _proc_status_bytes("VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        self.host_peak = _proc_status_bytes("VmHWM") if self.own_peak else _maxrss_bytes()
        PHASE_PEAKS.append(self.host_peak or 0)
        self.device_peak = torch.cuda.max_memory_allocated(self.device) if self.cuda else None
        return False

    def memory(self) -> dict:
        return {
            "host_peak_rss_bytes": self.host_peak,
            "host_rss_at_start_bytes": self.rss_at_start,
            "host_peak_scope": "this phase (VmHWM reset at its start)" if self.own_peak
            else "process high-water mark since start (ru_maxrss)",
            "device_peak_allocated_bytes": self.device_peak,
        }

    def memory_line(self) -> str:
        host = f"peak host RSS {self.host_peak / MB:.0f} MB" + ("" if self.own_peak else " (process high-water mark)")
        if self.rss_at_start:
            host += f" (RSS at start {self.rss_at_start / MB:.0f} MB)"
        device = f", peak device memory {self.device_peak / MB:.0f} MB" if self.device_peak is not None else ""
        return host + device


class UtilisationSampler:
    """NVML's GPU utilisation (percent of time a kernel ran), sampled in a thread, when
    ``torch.cuda.utilization`` works (it needs the ``nvidia-ml-py`` package); else nothing."""

    def __init__(self, device: torch.device, period: float = 0.1):
        self.device, self.period, self.samples = device, period, []
        self.available = False
        if device.type == "cuda":
            try:
                torch.cuda.utilization(device)
                self.available = True
            except Exception:  # no pynvml, or NVML refuses
                pass
        self._stop = threading.Event()

    def _loop(self):
        while not self._stop.wait(self.period):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:
                return

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.available:
            self._stop.set()
            self._thread.join()
        return False

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward(module, x: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """The network as tilepipe's engine runs it: channels_last, autocast at ``precision``, inference mode."""
    dtype = PRECISIONS[precision]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return module(x.contiguous(memory_format=torch.channels_last))["out"]


def _r(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def _ratio(a, b):
    return a / b if a and b else None


# --------------------------------------------------------------------------- 1. ceiling

def measure_ceiling(engine, tile: tuple[int, int], batch: int, min_seconds: float) -> dict:
    """The bare network on one random batch already on the device, timed in synchronised rounds."""
    device, module = engine.device, engine.module
    x = torch.randn((batch, 3, *tile), device=device).contiguous(memory_format=torch.channels_last)
    warmups = 3 if engine.cuda else 1  # cuDNN autotuning (and torch.compile) happen in the first passes
    t0 = time.perf_counter()
    for _ in range(warmups):
        forward(module, x, device, engine.precision)
    sync(device)
    per_pass = (time.perf_counter() - t0) / warmups
    round_size = max(1, int(0.5 / max(per_pass, 1e-6)))  # about half a second between synchronisations
    passes, start = 0, time.perf_counter()
    while True:
        for _ in range(round_size):
            forward(module, x, device, engine.precision)
        sync(device)
        passes += round_size
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and passes >= 3:
            break
    tile_mp = passes * batch * tile[0] * tile[1] / 1e6
    return {"batch_size": batch, "tile": list(tile), "passes": passes, "seconds": _r(elapsed),
            "warmup_passes": warmups, "warmup_seconds": _r(per_pass * warmups),
            "tile_megapixels_per_second": _r(tile_mp / elapsed, 6)}


# --------------------------------------------------------------------------- 2. tilepipe

def run_tilepipe(image: Path, store: Path, kwargs: dict, sample_gpu: bool = False,
                 keep_mask: bool = False) -> dict:
    """``tilepipe.run`` and the figures of its summary; the store is deleted afterwards (its
    summary.json/.md stay beside it). With ``keep_mask`` the mask comes back as an array."""
    device = resolve_device(kwargs.get("device", "auto"))
    with UtilisationSampler(device if sample_gpu else torch.device("cpu")) as nvml, Phase(device) as phase:
        summary = tilepipe.run(str(image), str(store), **kwargs).data
    mask = tilepipe.open(str(store)).mask[...] if keep_mask else None
    shutil.rmtree(store, ignore_errors=True)
    timing, plan, thr, eng = summary["timing"], summary["plan"], summary["throughput"], summary["engine"]
    mp = summary["input"]["megapixels"]
    blocks_wall = timing["sequential_seconds"]["blocks"]
    forward_busy = timing["stage_busy_seconds"]["forward"]
    out = {
        "image": str(image),
        "megapixels": mp,
        "wall_seconds": timing["wall_seconds"],
        "sequential_seconds": timing["sequential_seconds"],
        "megapixels_per_second": thr["megapixels_per_second"],
        "megapixels_per_second_blocks_only": _r(mp / blocks_wall, 6) if blocks_wall else None,
        "overlap_cost_factor": plan["overlap_cost_factor"],
        "tiles_computed": plan["tiles_computed"],
        "forward_calls": plan["forward_calls"],
        "blocks": plan["blocks"],
        "stage_busy_seconds": timing["stage_busy_seconds"],
        "forward_busy_seconds": forward_busy,
        "forward_busy_over_blocks_wall": _r(forward_busy / blocks_wall) if blocks_wall else None,
        "nvml_gpu_utilisation": _r(nvml.mean),
        "model_tflops_while_running": thr["model_tflops_while_running"],
        "fraction_of_device_peak": thr["fraction_of_device_peak"],
        "bottleneck": summary["bottleneck"],
        "engine": {k: eng[k] for k in ("device", "device_name", "precision", "batch_size", "torch_threads",
                                       "compile_warmup_seconds")},
        "summary_files": [str(store.with_suffix("")) + s for s in (".summary.json", ".summary.md")],
        "elapsed_seconds_in_benchmark": _r(phase.seconds),
        **phase.memory(),
    }
    if keep_mask:
        out["_mask"] = mask
    return out


def print_tilepipe(label: str, r: dict) -> None:
    busy = ", ".join(f"{k} {v:.2f}" for k, v in r["stage_busy_seconds"].items())
    seq = r["sequential_seconds"]
    print(f"{label}: {r['megapixels_per_second']:.4g} image MP/s ({r['megapixels']:.2f} MP in wall "
          f"{r['wall_seconds']:.2f} s = setup {seq['setup']:.2f} + blocks {seq['blocks']:.2f} + finalise "
          f"{seq['finalize']:.2f}; blocks only {r['megapixels_per_second_blocks_only']:.4g} MP/s), overlap cost "
          f"factor {r['overlap_cost_factor']:.3f}, {r['tiles_computed']} tiles in {r['forward_calls']} forward "
          f"passes, {r['blocks']} blocks", flush=True)
    print(f"  stage busy s: {busy}; forward busy {r['forward_busy_seconds']:.2f} s; "
          f"bottleneck {r['bottleneck']['stage']}")
    print(f"  {_mem_line(r)}", flush=True)


def _mem_line(r: dict) -> str:
    text = f"peak host RSS {r['host_peak_rss_bytes'] / MB:.0f} MB"
    if r.get("host_rss_at_start_bytes"):
        text += f" (RSS at start {r['host_rss_at_start_bytes'] / MB:.0f} MB)"
    if r.get("device_peak_allocated_bytes") is not None:
        text += f", peak device memory {r['device_peak_allocated_bytes'] / MB:.0f} MB"
    return text


# --------------------------------------------------------------------------- 3. naive

def tile_windows(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    return [(r, c, min(tile, height - r), min(tile, width - c))
            for r in range(0, height, tile) for c in range(0, width, tile)]


def measure_naive(image: Path, store: Path, spec: ModelSpec, device: torch.device, tile: int,
                  limit: int | None) -> dict:
    """Read a tile, run it, write it: batch 1, fp32, no overlap, no prefetch, NCHW, cuDNN defaults."""
    loaded = load_model(spec)  # a fresh copy: the engine's module was converted to channels_last in place
    model = loaded.module.to(device).eval()
    mean = torch.tensor(loaded.mean, device=device)[:, None, None]
    std = torch.tensor(loaded.std, device=device)[:, None, None]
    ds = rasterio.open(image)
    height, width = ds.height, ds.width
    windows = tile_windows(height, width, tile)
    if limit and limit < len(windows):
        picks = sorted({int(i) for i in np.linspace(0, len(windows) - 1, limit)})
        chosen = [windows[i] for i in picks]
    else:
        chosen = windows
    mask = zarr.create_array(str(store), shape=(height, width), chunks=(tile, tile), dtype="uint8",
                             fill_value=NO_LABEL, overwrite=True)
    benchmark_was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False  # what a script gets without asking for anything

    def one(r, c, h, w):
        pixels = ds.read([1, 2, 3], window=RioWindow(c, r, w, h))
        x = (torch.from_numpy(pixels).to(device).float() / 255.0 - mean) / std
        with torch.no_grad():
            logits = model(x[None])["out"]
        mask[r:r + h, c:c + w] = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()

    try:
        one(*chosen[0])  # one untimed pass: lazy initialisation, not the loop's steady state
        sync(device)
        with Phase(device) as phase:
            for window in chosen:
                one(*window)
    finally:
        torch.backends.cudnn.benchmark = benchmark_was
        ds.close()
    shutil.rmtree(store, ignore_errors=True)
    done_mp = sum(h * w for _, _, h, w in chosen) / 1e6
    image_mp = height * width / 1e6
    mps = done_mp / phase.seconds
    return {"tiles_run": len(chosen), "tiles_in_image": len(windows), "megapixels_run": _r(done_mp, 6),
            "seconds": _r(phase.seconds), "megapixels_per_second": _r(mps, 6),
            "extrapolated": len(chosen) < len(windows),
            "image_seconds_extrapolated": _r(image_mp / mps) if len(chosen) < len(windows) else None,
            "precision": "fp32", "batch_size": 1, "overlap": 0, **phase.memory()}


# --------------------------------------------------------------------------- 4. MONAI

def monai_windows(side: int, roi: int, overlap: float) -> int:
    """Windows ``sliding_window_inference`` runs on a ``side`` square (its scan interval rule)."""
    side = max(side, roi)
    interval = max(int(roi * (1 - overlap)), 1)
    per_axis = 1 if side <= roi else math.ceil((side - roi) / interval) + 1
    return per_axis * per_axis


def monai_bytes_per_pixel(num_classes: int, cuda: bool) -> tuple[float, float]:
    """(host, device) bytes per crop pixel of the whole-crop path: the raw uint8 read (3) and the
    labels (1) on the host; the float32 input (12), MONAI's float32 output (4 per class) and
    weight map (4), and the uint8 argmax's work arrays (6) where the arrays live. x1.25 slack for
    temporaries and the allocator."""
    arrays = (12 + 4 * num_classes + 4 + 6) * 1.25
    return (4.0, arrays) if cuda else (4.0 + arrays, 0.0)


def monai_budget_gb(args, engine) -> tuple[float, str]:
    if args.monai_max_gb:
        return args.monai_max_gb, "given (--monai-max-gb)"
    if engine.cuda:
        torch.cuda.empty_cache()  # what the caching allocator holds from earlier phases is free for this one
        free, _ = torch.cuda.mem_get_info(engine.device)
        return 0.4 * free / 1e9, f"40% of the GPU's free memory ({free / 1e9:.1f} GB)"
    import psutil

    available = psutil.virtual_memory().available
    return 0.4 * available / 1e9, f"40% of the host's available memory ({available / 1e9:.1f} GB)"


def monai_crop_side(args, engine, size: int) -> tuple[int, dict]:
    host_bpp, device_bpp = monai_bytes_per_pixel(engine.model.num_classes, engine.cuda)
    budget, why = monai_budget_gb(args, engine)
    bpp = device_bpp if engine.cuda else host_bpp
    if args.monai_crop:
        side, how = min(args.monai_crop, size), "given (--monai-crop)"
    else:
        fits = int(math.sqrt(budget * 1e9 / bpp))
        if fits >= size:
            side, how = size, "the whole image fits the budget"
        else:
            side = max(args.tile_size, fits // args.chunk_size * args.chunk_size)
            how = "the largest square crop (a multiple of the chunk size) that fits the budget"
    return side, {"side": side, "how": how, "budget_gb": _r(budget, 3), "budget_from": why,
                  "estimated_gb": _r(side * side * bpp / 1e9, 3),
                  "estimated_bytes_per_pixel": {"host": host_bpp, "device": device_bpp}}


def measure_monai(crop: Path, store: Path, engine, batch: int, args) -> dict:
    """GeoTIFF crop -> whole array -> ``sliding_window_inference`` -> argmax -> zarr, timed as a whole."""
    from monai.inferers import sliding_window_inference

    device, module, precision = engine.device, engine.module, engine.precision
    mean, std = engine.mean, engine.std  # the model's normalisation, on the device
    tile = args.tile_size
    source = open_source(SourceSpec(str(crop)))  # the same intensity scaling tilepipe uses
    low = torch.tensor(source.scaling.low, dtype=torch.float32, device=device)[:, None, None]
    span = torch.tensor(source.scaling.high, dtype=torch.float32, device=device)[:, None, None] - low

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        count = len(patch)
        if args.compile and count < batch:  # one shape for the compiled graph, as tilepipe's engine pads
            patch = torch.cat([patch, patch.new_zeros((batch - count, *patch.shape[1:]))])
        logits = forward(module, (patch - mean) / std, device, precision)
        return torch.softmax(logits[:count].float(), dim=1)

    times = {}
    with Phase(device) as phase:
        t = time.perf_counter()
        with rasterio.open(crop) as ds:
            raw = ds.read(list(source.bands))
            height, width = ds.height, ds.width
        times["read"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(raw).to(device).float().sub_(low).div_(span).clamp_(0, 1)[None]  # in place
            del raw
            probs = sliding_window_inference(x, roi_size=(tile, tile), sw_batch_size=batch, predictor=predictor,
                                             overlap=args.monai_overlap, mode="gaussian")
            del x
            sync(device)
            times["sliding_window_inference"] = time.perf_counter() - t
            t = time.perf_counter()
            labels = first_argmax(probs[0]).cpu().numpy()  # tilepipe's argmax: uint8, ties to the lower class
            del probs
        times["argmax"] = time.perf_counter() - t
        t = time.perf_counter()
        out = zarr.create_array(str(store), shape=labels.shape, chunks=(args.chunk_size, args.chunk_size),
                                dtype="uint8", fill_value=NO_LABEL, overwrite=True)
        out[...] = labels
        times["write"] = time.perf_counter() - t
    shutil.rmtree(store, ignore_errors=True)
    mp = height * width / 1e6
    windows = monai_windows(min(height, width), tile, args.monai_overlap) if height == width else None
    return {"crop": [height, width], "megapixels": _r(mp, 6), "seconds": _r(phase.seconds),
            "megapixels_per_second": _r(mp / phase.seconds, 6),
            "inference_only_megapixels_per_second": _r(mp / times["sliding_window_inference"], 6),
            "stage_seconds": {k: _r(v) for k, v in times.items()}, "windows": windows,
            "overlap_cost_factor": _r(windows * tile * tile / (height * width)) if windows else None,
            "overlap": args.monai_overlap, "mode": "gaussian", "sw_batch_size": batch, "roi": [tile, tile],
            "precision": precision, **phase.memory()}


# --------------------------------------------------------------------------- host-only

def host_labels(pixels: np.ndarray, core_rows: slice, core_cols: slice, core_valid: np.ndarray) -> np.ndarray:
    """A stand-in mask for the write: band 1 of the core quantised to 4 classes. Noisier than a
    network's mask, so its compression (and write) cost is on the high side."""
    labels = pixels[0, core_rows, core_cols] >> 6
    labels = labels.astype(np.uint8, copy=False)
    labels[~core_valid] = NO_LABEL
    return labels


def host_block(source, plan: Plan, store: MaskStore, index, batch: int, proposed: bool = False) -> dict:
    """process_block's host work for one block, with tilepipe's own functions, minus the model
    and the blending: read the block plus halo, cut and scale its tiles batch by batch as the
    prefetch thread does (the result would go to the GPU: it is dropped), write a uint8 mask.
    ``proposed``: what a CUDA run's host does since tilepipe scales on the device: cut the tiles
    only, in the file's dtype. Without it: what a CPU run's host does (cut and scale)."""
    seconds = {"read": 0.0, "normalise": 0.0, "mask": 0.0, "write": 0.0}
    block = plan.block(index)
    read = block.read_window
    t = time.perf_counter()
    pixels, valid = source.read(read, block.plane)
    seconds["read"] += time.perf_counter() - t
    t = time.perf_counter()
    core_rows, core_cols = block.core.relative_to(read)
    core_valid = valid[core_rows, core_cols]
    tiles = [w for w in block.tiles if valid[w.relative_to(read)].any()]
    for i in range(0, len(tiles), batch):
        if proposed:
            tile_pixels(pixels, valid, read, tiles[i:i + batch])
        else:
            tile_inputs(pixels, valid, read, tiles[i:i + batch], source.scaling)
    seconds["normalise"] += time.perf_counter() - t
    t = time.perf_counter()
    labels = host_labels(pixels, core_rows, core_cols, core_valid)
    seconds["mask"] += time.perf_counter() - t
    t = time.perf_counter()
    store.write_block(block, labels)
    seconds["write"] += time.perf_counter() - t
    return {"seconds": seconds, "read_pixels": read.area, "tiles": len(tiles)}


def uncompressed_copy(image: Path, rows: int) -> Path:
    """The top ``rows`` rows of ``image`` as an uncompressed tiled GeoTIFF beside it (reused):
    reading it costs what reading the deflate file costs, minus decoding."""
    path = image.with_name(f"{image.stem}_top{rows}_raw.tif")
    with rasterio.open(image) as src:
        if path.exists():
            with rasterio.open(path) as ds:
                if (ds.width, ds.height) == (src.width, rows) and ds.compression is None:
                    return path
        profile = dict(driver="GTiff", width=src.width, height=rows, count=src.count, dtype=src.dtypes[0],
                       tiled=True, blockxsize=512, blockysize=512, compress="none", crs=src.crs,
                       transform=src.transform)
        tmp = path.with_name(path.name + ".partial")
        with rasterio.open(tmp, "w", **profile) as dst:
            for row in range(0, rows, 512):
                h = min(512, rows - row)
                dst.write(src.read(window=RioWindow(0, row, src.width, h)), window=RioWindow(0, row, src.width, h))
    os.replace(tmp, path)
    return path


def skip_empty_chunk_check(store: MaskStore) -> bool:
    """Turn off zarr's per-chunk "all fill value?" check on this handle (``Array.with_config``,
    zarr >= 3.1.6); False where this zarr cannot."""
    with_config = getattr(store.mask, "with_config", None)
    if with_config is None:
        return False
    store.mask = with_config({"write_empty_chunks": True})
    return True


def host_profile(image: Path, plan: Plan, store: MaskStore, alt_store: MaskStore, batch: int, blocks: int) -> dict:
    """One thread, the first ``blocks`` blocks (row-major), each stage timed alone; decoding is
    split from reading by reading the same windows from an uncompressed copy. Both files' bytes are
    read once untimed first, so both come from the page cache: disk speed is not part of this figure.

    Also timed, outside the total: two alternatives (cutting uint8 tiles only, as if scaling ran on
    the device; writing with zarr's ``write_empty_chunks=True``, which skips its per-chunk "all
    fill value?" comparison) and a plain copy of each float32 batch, which stands in for the copy
    into pinned memory that ``Engine.upload`` makes on CUDA (not measurable without a GPU)."""
    indices = [b.index for b in plan.blocks()][:blocks]
    rows = min(plan.height, max(plan.block(i).read_window.row_stop for i in indices))
    raw_path = uncompressed_copy(image, rows)
    for path in (image, raw_path):
        warm_page_cache(path)
    # fresh sources (not open_source's cached ones): new GDAL handles, so no block decoded earlier
    # in this process is served from GDAL's block cache; within the loop, a halo that the previous
    # block already decoded is served from it, as in a run
    deflate, raw = GeoTiffSource(SourceSpec(str(image))), GeoTiffSource(SourceSpec(str(raw_path)))
    skip_empty_chunk_check(alt_store)
    totals = dict.fromkeys(("read_uncompressed", "read_deflate", "normalise", "mask", "write", "cut_only",
                            "batch_copy", "write_empty_chunks"), 0.0)
    pixels_read = 0
    for i in indices:
        block = plan.block(i)
        window = block.read_window
        pixels_read += window.intersection(Window(0, 0, plan.height, plan.width)).area
        t = time.perf_counter()
        raw.read(window)
        totals["read_uncompressed"] += time.perf_counter() - t
        r = host_block(deflate, plan, store, i, batch)
        for k in ("normalise", "mask", "write"):
            totals[k] += r["seconds"][k]
        totals["read_deflate"] += r["seconds"]["read"]
        # the alternatives, on this block's pixels (read again: GDAL's block cache serves it)
        pixels, valid = deflate.read(window)
        tiles = [w for w in block.tiles if valid[w.relative_to(window)].any()]
        for j in range(0, len(tiles), batch):
            t = time.perf_counter()
            tile_pixels(pixels, valid, window, tiles[j:j + batch])
            totals["cut_only"] += time.perf_counter() - t
            images, _ = tile_inputs(pixels, valid, window, tiles[j:j + batch], deflate.scaling)
            buffer = np.empty_like(images)
            t = time.perf_counter()
            np.copyto(buffer, images)
            totals["batch_copy"] += time.perf_counter() - t
        rows_, cols_ = block.core.relative_to(window)
        labels = host_labels(pixels, rows_, cols_, valid[rows_, cols_])
        t = time.perf_counter()
        alt_store.write_block(block, labels)
        totals["write_empty_chunks"] += time.perf_counter() - t
    core_mp = sum(plan.block(i).core.area for i in indices) / 1e6
    stages = {
        "read (I/O from page cache + GDAL, no decode)": totals["read_uncompressed"],
        "decode (deflate + predictor)": max(totals["read_deflate"] - totals["read_uncompressed"], 0.0),
        "normalise (tile_inputs: cut, float32, scale, clip)": totals["normalise"],
        "mask (stand-in labels)": totals["mask"],
        "write (MaskStore.write_block: zstd + file)": totals["write"],
    }
    total = sum(stages.values())
    alternatives = {
        "cut only, uint8 (scaling on the device)": totals["cut_only"],
        "write with write_empty_chunks=True": totals["write_empty_chunks"],
        "copy of each float32 batch (stands in for the pinned-memory copy on CUDA)": totals["batch_copy"],
    }
    proposed = total - totals["normalise"] - totals["write"] + totals["cut_only"] + totals["write_empty_chunks"]
    return {"blocks": len(indices), "core_megapixels": _r(core_mp, 6), "read_megapixels": _r(pixels_read / 1e6, 6),
            "stage_seconds": {k: _r(v) for k, v in stages.items()},
            "stage_share": {k: _r(v / total) for k, v in stages.items()},
            "stage_megapixels_per_second_one_thread": {k: _r(core_mp / v, 4) if v else None for k, v in stages.items()},
            "single_thread_megapixels_per_second": _r(core_mp / total, 4),
            "dominant": max(stages, key=stages.get),
            "alternatives_seconds": {k: _r(v) for k, v in alternatives.items()},
            "single_thread_megapixels_per_second_with_both_alternatives": _r(core_mp / proposed, 4),
            "uncompressed_copy": str(raw_path)}


def warm_page_cache(path: Path) -> None:
    """Read the file's bytes once, so the timed reads come from the page cache (disk speed is not
    what the host-side figure is about; a cold read from a slow disk adds to it)."""
    with open(path, "rb") as f:
        while f.read(1 << 23):
            pass


def host_only(args, image: Path) -> dict:
    stride = args.output_stride or 8  # the real model's lattice, as on the GPU run this stands for
    source = open_source(SourceSpec(str(image)))
    plan = Plan(source.height, source.width, TileGrid(args.tile_size, args.overlap, stride), args.chunk_size,
                args.block_size)
    batch = args.batch_size if args.batch_size != "auto" else 4
    print(f"host side of a GPU run: {plan.block_count} blocks of {args.block_size} px, tiles {plan.tile_height} px "
          f"overlap {args.overlap} (stride {stride} lattice), overlap cost factor {plan.overlap_cost_factor:.3f}, "
          f"scaling {source.scaling.method}, {args.workers} threads, batches of {batch} tiles", flush=True)

    store_url = args.workdir / "throughput_hostonly.zarr"
    warm_page_cache(image)

    def timed(proposed: bool) -> dict:
        store = MaskStore.create(str(store_url), plan, 21, False, attrs={"nodata": NO_LABEL})
        if proposed:
            skip_empty_chunk_check(store)
        with Phase(torch.device("cpu")) as phase, ThreadPoolExecutor(args.workers, thread_name_prefix="host") as pool:
            reports = list(pool.map(lambda b: host_block(source, plan, store, b.index, batch, proposed),
                                    plan.blocks()))
        shutil.rmtree(store_url, ignore_errors=True)
        busy = {k: _r(sum(r["seconds"][k] for r in reports)) for k in ("read", "normalise", "mask", "write")}
        return {"seconds": _r(phase.seconds), "megapixels_per_second": _r(plan.megapixels / phase.seconds, 6),
                "busy_seconds": busy, **phase.memory(), "_line": phase.memory_line()}

    runs = {False: [], True: []}
    for _ in range(args.repeat):  # alternated, so a burst of load elsewhere hits both alike
        for proposed in (False, True):
            runs[proposed].append(timed(proposed))
    current, proposed_runs = runs[False], runs[True]
    median = sorted(current, key=lambda r: r["megapixels_per_second"])[(len(current) - 1) // 2]
    median_p = sorted(proposed_runs, key=lambda r: r["megapixels_per_second"])[(len(proposed_runs) - 1) // 2]
    mps, mps_p = median["megapixels_per_second"], median_p["megapixels_per_second"]
    ok = mps >= HOST_TARGET_MPS
    each = ", ".join(f"{r['megapixels_per_second']:.3g}" for r in current)
    print(f"host-only, tiles scaled on the host (a CPU run's host work): {mps:.3g} image MP/s, median of {len(current)} (each: {each}; {plan.megapixels:.2f} MP, "
          f"{args.workers} threads); busy s of the median run: "
          + ", ".join(f"{k} {v:.2f}" for k, v in median["busy_seconds"].items()) + f"; {median['_line']}")
    print(f"{'PASS' if ok else 'FAIL'}: host side {mps:.3g} MP/s vs target {HOST_TARGET_MPS:g} MP/s "
          f"(on {os.cpu_count()} CPUs)", flush=True)
    each_p = ", ".join(f"{r['megapixels_per_second']:.3g}" for r in proposed_runs)
    can_skip = hasattr(zarr.Array, "with_config")
    print(f"host-only, tiles cut in the file's dtype and scaled on the device (a CUDA run's host work; "
          f"write_empty_chunks=True{'' if can_skip else ' NOT APPLIED: zarr < 3.1.6'}): {mps_p:.3g} image MP/s, "
          f"median (each: {each_p}); busy s: "
          + ", ".join(f"{k} {v:.2f}" for k, v in median_p["busy_seconds"].items()), flush=True)
    for r in current + proposed_runs:
        r.pop("_line")

    store = MaskStore.create(str(store_url), plan, 21, False, attrs={"nodata": NO_LABEL})
    alt_url = args.workdir / "throughput_hostonly_alt.zarr"
    alt = MaskStore.create(str(alt_url), plan, 21, False, attrs={"nodata": NO_LABEL})
    profile = host_profile(image, plan, store, alt, batch, args.profile_blocks)
    shutil.rmtree(store_url, ignore_errors=True)
    shutil.rmtree(alt_url, ignore_errors=True)
    print(f"profile, one thread, {profile['blocks']} blocks ({profile['core_megapixels']:.2f} MP core, "
          f"{profile['read_megapixels']:.2f} MP read): {profile['single_thread_megapixels_per_second']:.3g} MP/s")
    for k, v in profile["stage_seconds"].items():
        print(f"  {k}: {v:.3f} s ({profile['stage_share'][k]:.0%}; "
              f"{profile['stage_megapixels_per_second_one_thread'][k] or 0:.4g} MP/s alone)")
    print(f"  dominant: {profile['dominant']}")
    for k, v in profile["alternatives_seconds"].items():
        print(f"  alternative, not in the total: {k}: {v:.3f} s")
    print(f"  one thread with both alternatives (cut only + write_empty_chunks): "
          f"{profile['single_thread_megapixels_per_second_with_both_alternatives']:.3g} MP/s", flush=True)

    cpu_kwargs = run_kwargs(args, model="standin", weights="none", device="cpu", precision="fp32", compile=False,
                            output_stride=None)
    full = run_tilepipe(image, args.workdir / "throughput_hostonly_cpu_standin.zarr", cpu_kwargs)
    print_tilepipe("full CPU pipeline (stand-in model, CPU gaussian blending, tilepipe.run)", full)
    return {
        "host_only": {"megapixels": _r(plan.megapixels, 6), "megapixels_per_second": _r(mps, 6),
                      "statistic": f"median of {len(current)} runs", "runs": current, "threads": args.workers,
                      "target_mps": HOST_TARGET_MPS, "pass": ok, "overlap_cost_factor": _r(plan.overlap_cost_factor),
                      "output_stride": stride, "batch": batch},
        "host_only_cuda_path": {
            "what": "projection, not tilepipe's current code: tiles cut in uint8 (scaling on the device), "
                    "mask written with write_empty_chunks=True",
            "write_empty_chunks_applied": can_skip,
            "megapixels_per_second": _r(mps_p, 6), "statistic": f"median of {len(proposed_runs)} runs",
            "runs": proposed_runs},
        "profile": profile,
        "full_cpu_pipeline_standin": full,
    }


# --------------------------------------------------------------------------- stride trade-off

def calibrated_checkpoint(args, image: Path, tile: int) -> Path:
    """Random DeepLabV3-ResNet101 weights (seed 0) whose BatchNorm running statistics are
    recomputed on tiles of this image at stride 8, so activations have sane scales; saved as a
    torchvision state dict (the geometry tilepipe then picks with ``output_stride``)."""
    path = args.workdir / f"deeplabv3_resnet101_random_bncal_{image.stem}_{tile}.pth"
    if path.exists():
        return path
    loaded = load_model(ModelSpec("deeplabv3_resnet101", "none", 8))
    device = args.device_obj
    module = loaded.module.to(device)
    source = open_source(SourceSpec(str(image)))
    rng = np.random.default_rng(0)
    mean = torch.tensor(loaded.mean, device=device)[None, :, None, None]
    std = torch.tensor(loaded.std, device=device)[None, :, None, None]
    batches = []
    for _ in range(2):  # 2 batches of 4 tiles at random places
        tiles = []
        for _ in range(4):
            r = int(rng.integers(0, max(source.height - tile, 0) + 1))
            c = int(rng.integers(0, max(source.width - tile, 0) + 1))
            pixels, _ = source.read(Window(r, c, tile, tile))
            tiles.append(source.scaling.apply(pixels))
        batches.append((torch.from_numpy(np.stack(tiles)).to(device) - mean) / std)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
    module.train()
    with torch.no_grad():
        for x in batches:
            module(x)
    module.eval()
    tmp = path.with_name(path.name + ".partial")
    torch.save({k: v.cpu() for k, v in module.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path


def stride_tradeoff(args, image: Path) -> dict:
    side = min(args.tradeoff_crop, args.size)
    crop = build_crop(image, side) if side < args.size else image
    tile = min(args.tile_size, side)
    t = time.perf_counter()
    if args.weights == "none":
        checkpoint = str(calibrated_checkpoint(args, image, tile))
        weights_note = ("random (seed 0), BatchNorm running statistics calibrated on 8 tiles of the image at stride 8; "
                        "the agreement is a diagnostic, not accuracy")
        caveat = ("DIAGNOSTIC ONLY: random weights with calibrated BatchNorm, not trained ones (they cannot be "
                  "downloaded here); it says how much the geometry change alone moves the argmax of this network, "
                  "not how accurate either stride is")
    else:  # trained weights where they are at hand: agreement then measures a real model's change
        checkpoint = args.weights
        weights_note = f"given weights {args.weights}; still no ground truth: agreement, not accuracy"
        caveat = "agreement between the strides with the given weights, not accuracy against ground truth"
    print(f"weights: {weights_note}: {checkpoint} ({time.perf_counter() - t:.1f} s)", flush=True)
    results, masks = {}, {}
    for stride in (8, 16):
        kwargs = run_kwargs(args, model="deeplabv3_resnet101", weights=checkpoint, output_stride=stride)
        r = run_tilepipe(crop, args.workdir / f"throughput_stride{stride}.zarr", kwargs, keep_mask=True)
        masks[stride] = r.pop("_mask")
        loaded = cached_model(ModelSpec("deeplabv3_resnet101", checkpoint, stride))  # the run's, cached
        tile_hw = (min(args.tile_size, side), min(args.tile_size, side))
        r["macs_per_tile"] = loaded.macs_per_tile(*tile_hw, output_stride=stride)
        r["macs_counted_on"] = list(tile_hw)
        engine = cached_engine(loaded.spec, EngineOptions(args.device, args.precision, args.batch_size, args.compile))
        batch = min(engine.batch_size_for(*tile_hw), r["tiles_computed"])
        with Phase(engine.device) as phase:
            r["ceiling"] = measure_ceiling(engine, tile_hw, batch, args.ceiling_seconds)
        r["ceiling"].update(phase.memory())
        classes, counts = np.unique(masks[stride], return_counts=True)
        r["classes_present"] = int(len(classes))
        r["largest_class_share"] = _r(counts.max() / counts.sum())
        results[stride] = r
        print_tilepipe(f"output stride {stride}", r)
        c = r["ceiling"]
        print(f"  bare forward (batch {c['batch_size']}, {engine.precision}): {c['tile_megapixels_per_second']:.4g} tile "
              f"MP/s ({c['passes']} passes in {c['seconds']:.2f} s after {c['warmup_passes']} warm-up)")
        print(f"  {r['macs_per_tile'] / 1e9:.2f} G multiply-adds per {tile_hw[0]} x {tile_hw[1]} tile; mask has "
              f"{r['classes_present']} classes, the largest covers {r['largest_class_share']:.1%}", flush=True)
    agreement = float((masks[8] == masks[16]).mean())
    speedup = _ratio(results[16]["megapixels_per_second_blocks_only"], results[8]["megapixels_per_second_blocks_only"])
    speedup_bare = _ratio(results[16]["ceiling"]["tile_megapixels_per_second"],
                          results[8]["ceiling"]["tile_megapixels_per_second"])
    print(f"stride 16 / stride 8: {speedup:.2f}x MP/s end to end (blocks only), {speedup_bare:.2f}x bare forward, "
          f"{results[8]['macs_per_tile'] / results[16]['macs_per_tile']:.2f}x fewer multiply-adds per tile")
    print(f"pixel agreement of the two masks: {agreement:.1%}  [{caveat}]", flush=True)
    return {"crop": side, "crop_path": str(crop), "checkpoint": checkpoint, "weights_note": weights_note,
            "stride_8": results[8], "stride_16": results[16], "pixel_agreement": _r(agreement, 6),
            "speedup_16_over_8": _r(speedup), "speedup_16_over_8_bare_forward": _r(speedup_bare)}


# --------------------------------------------------------------------------- default mode

def compare(args, image: Path) -> dict:
    tp_store = args.workdir / f"throughput_{image.stem}_{args.model}.zarr"
    options = resolve_options(**run_kwargs(args))
    prepared = prepare(str(image), str(tp_store), options)  # the engine tilepipe.run will reuse (cached)
    engine, plan = prepared.engine, prepared.plan
    tile = (plan.tile_height, plan.tile_width)
    batch = engine.batch_size_for(*tile)
    print(f"device: {engine.device} ({engine.device_name}), precision {engine.precision}, batch {batch}, "
          f"torch threads {torch.get_num_threads()}, model {args.model} (weights {engine.model.weights_identity}, "
          f"output stride {engine.model.output_stride})", flush=True)
    print(f"plan: {plan.megapixels:.2f} MP, tiles {tile[0]} x {tile[1]}, overlap {args.overlap}, "
          f"{plan.block_count} blocks, overlap cost factor {plan.overlap_cost_factor:.3f}", flush=True)
    out = {"plan": {"megapixels": _r(plan.megapixels, 6), "tile": list(tile), "overlap": args.overlap,
                    "overlap_cost_factor": _r(plan.overlap_cost_factor), "blocks": plan.block_count},
           "engine": {"device": str(engine.device), "device_name": engine.device_name, "precision": engine.precision,
                      "batch_size": batch, "torch_threads": torch.get_num_threads(), "compile": args.compile,
                      "weights": engine.model.weights_identity, "output_stride": engine.model.output_stride}}

    ceiling = None
    if "ceiling" not in args.skip:
        with Phase(engine.device) as phase:
            ceiling = measure_ceiling(engine, tile, batch, args.ceiling_seconds)
        ceiling.update(phase.memory())
        print(f"ceiling (bare forward, batch {batch}, {engine.precision}, channels_last, data on the device): "
              f"{ceiling['tile_megapixels_per_second']:.4g} tile MP/s ({ceiling['passes']} passes in "
              f"{ceiling['seconds']:.2f} s after {ceiling['warmup_passes']} warm-up); {phase.memory_line()}", flush=True)

    tp = run_tilepipe(image, tp_store, run_kwargs(args), sample_gpu=True)
    print_tilepipe("tilepipe (GeoTIFF -> Zarr, tilepipe.run)", tp)

    naive = None
    if "naive" not in args.skip:
        naive = measure_naive(image, args.workdir / "throughput_naive.zarr", engine.model.spec, engine.device,
                              args.tile_size, args.naive_limit)
        scope = (f"EXTRAPOLATED from {naive['tiles_run']} of {naive['tiles_in_image']} tiles "
                 f"({naive['megapixels_run']:.2f} MP; whole image would take {naive['image_seconds_extrapolated']:.1f} s)"
                 if naive["extrapolated"] else f"all {naive['tiles_run']} tiles")
        print(f"naive loop (rasterio tile -> model batch 1 fp32 NCHW -> argmax -> zarr, no overlap): "
              f"{naive['megapixels_per_second']:.4g} image MP/s, {scope}, {naive['seconds']:.2f} s; "
              f"{_mem_line(naive)}", flush=True)

    monai = tp_crop = None
    if "monai" not in args.skip:
        side, crop_info = monai_crop_side(args, engine, args.size)
        crop = image if side >= args.size else build_crop(image, side)
        print(f"MONAI crop: {side} x {side} ({crop_info['how']}; budget {crop_info['budget_gb']:.2f} GB from "
              f"{crop_info['budget_from']}, estimated {crop_info['estimated_gb']:.2f} GB)", flush=True)
        monai = measure_monai(crop, args.workdir / "throughput_monai.zarr", engine, batch, args)
        monai["crop_choice"] = crop_info
        st = monai["stage_seconds"]
        print(f"MONAI sliding_window_inference (overlap {args.monai_overlap}, gaussian, sw_batch_size {batch}, "
              f"{engine.precision}) GeoTIFF -> array -> zarr: {monai['megapixels_per_second']:.4g} image MP/s "
              f"({monai['megapixels']:.2f} MP in {monai['seconds']:.2f} s: read {st['read']:.2f}, inference "
              f"{st['sliding_window_inference']:.2f}, argmax {st['argmax']:.2f}, write {st['write']:.2f}; "
              f"inference alone {monai['inference_only_megapixels_per_second']:.4g} MP/s; {monai['windows']} "
              f"windows, overlap cost factor {monai['overlap_cost_factor']})", flush=True)
        print(f"  {_mem_line(monai)}")
        if crop == image:
            tp_crop = dict(tp, note="the whole image: the tilepipe run above")
        else:
            tp_crop = run_tilepipe(crop, args.workdir / f"throughput_{crop.stem}_{args.model}.zarr", run_kwargs(args))
            print_tilepipe(f"tilepipe on the same {side} x {side} crop", tp_crop)

    ratios = {}
    if ceiling:
        ceiling_image = ceiling["tile_megapixels_per_second"] / tp["overlap_cost_factor"]
        ceiling["image_megapixels_per_second"] = _r(ceiling_image, 6)
        ratios["tilepipe_over_ceiling"] = _r(_ratio(tp["megapixels_per_second"], ceiling_image))
        ratios["tilepipe_blocks_only_over_ceiling"] = _r(_ratio(tp["megapixels_per_second_blocks_only"], ceiling_image))
    if naive:
        ratios["tilepipe_over_naive"] = _r(_ratio(tp["megapixels_per_second"], naive["megapixels_per_second"]))
        # per pixel the network computed: the naive loop computes each image pixel once (no overlap)
        ratios["tilepipe_over_naive_per_network_pixel"] = _r(_ratio(
            tp["megapixels_per_second"] * tp["overlap_cost_factor"], naive["megapixels_per_second"]))
    if monai:
        ratios["tilepipe_over_monai_same_crop"] = _r(_ratio(tp_crop["megapixels_per_second"],
                                                            monai["megapixels_per_second"]))
        if monai["overlap_cost_factor"]:
            ratios["tilepipe_over_monai_per_network_pixel"] = _r(_ratio(
                tp_crop["megapixels_per_second"] * tp_crop["overlap_cost_factor"],
                monai["megapixels_per_second"] * monai["overlap_cost_factor"]))
    busy_label = ("GPU busy fraction (forward busy s / blocks wall s)" if engine.cuda else
                  "engine busy fraction on the CPU (forward busy s / blocks wall s; not a GPU figure)")

    def memory(r: dict | None) -> str:
        if not r:
            return ""
        text = f"{r['host_peak_rss_bytes'] / MB:>8.0f}"
        return text + (f" {r['device_peak_allocated_bytes'] / MB:>10.0f}" if r["device_peak_allocated_bytes"] is not None
                       else f" {'-':>10}")

    print("")
    print(f"== {plan.megapixels:.2f} MP image, {engine.device} ({engine.device_name}), {engine.precision}, batch {batch} ==")
    print(f"{'':<30} {'image MP/s':>10} {'network px':>10} {'host MB':>8} {'device MB':>10}   notes")
    if ceiling:
        print(f"{'ceiling (bare forward)':<30} {ceiling['image_megapixels_per_second']:>10.4g} "
              f"{tp['overlap_cost_factor']:>10.3f} {memory(ceiling)}   {ceiling['tile_megapixels_per_second']:.4g} tile "
              f"MP/s / tilepipe's overlap cost factor")
    print(f"{'tilepipe':<30} {tp['megapixels_per_second']:>10.4g} {tp['overlap_cost_factor']:>10.3f} {memory(tp)}   "
          f"blocks only {tp['megapixels_per_second_blocks_only']:.4g} MP/s")
    if naive:
        print(f"{'naive loop':<30} {naive['megapixels_per_second']:>10.4g} {1.0:>10.3f} {memory(naive)}   "
              + (f"EXTRAPOLATED from {naive['tiles_run']} of {naive['tiles_in_image']} tiles"
                 if naive["extrapolated"] else "every tile"))
    if monai:
        label = f"MONAI ({monai['crop'][0]} crop)"
        print(f"{label:<30} {monai['megapixels_per_second']:>10.4g} {monai['overlap_cost_factor'] or 0:>10.3f} "
              f"{memory(monai)}   inference alone {monai['inference_only_megapixels_per_second']:.4g} MP/s")
        if tp_crop is not tp and "note" not in tp_crop:
            label = f"tilepipe ({monai['crop'][0]} crop)"
            print(f"{label:<30} {tp_crop['megapixels_per_second']:>10.4g} {tp_crop['overlap_cost_factor']:>10.3f} "
                  f"{memory(tp_crop)}")
    print("(network px: pixels the network computes per image pixel; host MB: peak RSS of that phase, which "
          "includes Python, torch and the model; device MB: torch.cuda.max_memory_allocated)")
    for k, v in ratios.items():
        print(f"{k.replace('_', ' ')}: {v if v is not None else 'n/a'}")
    print(f"{busy_label}: {tp['forward_busy_over_blocks_wall']}")
    if tp["nvml_gpu_utilisation"] is not None:
        print(f"NVML GPU utilisation during the tilepipe run (mean of samples): {tp['nvml_gpu_utilisation']:.1%}")
    print(f"peak host RSS of the whole benchmark process (ru_maxrss and the phases' peaks): "
          f"{process_peak_rss() / MB:.0f} MB", flush=True)
    out.update(ceiling=ceiling, tilepipe=tp, naive=naive, monai=monai, tilepipe_on_monai_crop=tp_crop,
               ratios=ratios, busy_fraction={"label": busy_label, "value": tp["forward_busy_over_blocks_wall"],
                                             "nvml_mean_utilisation": tp["nvml_gpu_utilisation"]})
    return out


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv])
    versions = library_versions()
    try:
        import monai

        versions["monai"] = monai.__version__
    except ImportError:
        versions["monai"] = "not installed"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device_name = torch.cuda.get_device_name(args.device_obj) if args.cuda else cpu_name()
    load_start = os.getloadavg()
    print(f"command: {command}")
    print(f"date: {started}")
    print(f"device: {args.device_obj} ({device_name}); cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"load average at start {load_start[0]:.2f}")
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
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
    else:
        mode, results = "compare", compare(args, image)

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
                     "compile": args.compile, "output_stride": args.output_stride, "skip": sorted(args.skip)},
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
