"""The two baselines tilepipe is measured against, on the same image, model and device.

* **naive**: rasterio reads a tile, the network runs it (batch 1, fp32, no overlap, a fresh NCHW
  copy of the same model, cuDNN autotuning off), the argmax goes into a zarr array, tile after
  tile: what a first script does.
* **MONAI**: the whole crop read into one array, ``sliding_window_inference`` over it (gaussian,
  ``sw_batch_size`` = tilepipe's batch, roi = tile, same precision, same normalisation and
  softmax), argmax, written to zarr: the well-kept library's way, bounded by memory.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import zarr
from rasterio.windows import Window as RioWindow

from measure import Phase, forward, rounded, sync
from tilepipe.model import ModelSpec, load_model
from tilepipe.sink import NO_LABEL
from tilepipe.sources import SourceSpec, open_source
from tilepipe.stitch import first_argmax


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
    return {"tiles_run": len(chosen), "tiles_in_image": len(windows), "megapixels_run": rounded(done_mp, 6),
            "seconds": rounded(phase.seconds), "megapixels_per_second": rounded(mps, 6),
            "extrapolated": len(chosen) < len(windows),
            "image_seconds_extrapolated": rounded(image_mp / mps) if len(chosen) < len(windows) else None,
            "precision": "fp32", "batch_size": 1, "overlap": 0, **phase.memory()}


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
    return side, {"side": side, "how": how, "budget_gb": rounded(budget, 3), "budget_from": why,
                  "estimated_gb": rounded(side * side * bpp / 1e9, 3),
                  "estimated_bytes_per_pixel": {"host": host_bpp, "device": device_bpp}}


def measure_monai(crop: Path, store: Path, engine, batch: int, args) -> dict:
    """GeoTIFF crop -> whole array -> ``sliding_window_inference`` -> argmax -> zarr, timed as a whole."""
    from monai.inferers import sliding_window_inference

    device, module, precision = engine.device, engine.module, engine.precision
    mean, std = engine.mean, engine.std  # the model's normalisation, on the device
    tile = args.tile_size
    source = open_source(SourceSpec(path=str(crop)))  # the same intensity scaling tilepipe uses
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
    return {"crop": [height, width], "megapixels": rounded(mp, 6), "seconds": rounded(phase.seconds),
            "megapixels_per_second": rounded(mp / phase.seconds, 6),
            "inference_only_megapixels_per_second": rounded(mp / times["sliding_window_inference"], 6),
            "stage_seconds": {k: rounded(v) for k, v in times.items()}, "windows": windows,
            "overlap_cost_factor": rounded(windows * tile * tile / (height * width)) if windows else None,
            "overlap": args.monai_overlap, "mode": "gaussian", "sw_batch_size": batch, "roi": [tile, tile],
            "precision": precision, **phase.memory()}


