"""DeepLabV3-ResNet101 at output stride 8 against 16 (``throughput.py --stride-tradeoff``) on a
small crop: image MP/s of each through ``tilepipe.run``, the bare forward pass of each, the
multiply-adds per tile, and the pixel agreement of the two masks (random weights with BatchNorm
statistics calibrated on the image: a diagnostic, not an accuracy figure).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from _common import build_crop
from measure import Phase, measure_ceiling, print_tilepipe, ratio, rounded, run_kwargs, run_tilepipe
from tilepipe.engine import EngineOptions, cached_engine
from tilepipe.grid import Window
from tilepipe.model import ModelSpec, cached_model, load_model
from tilepipe.sources import SourceSpec, open_source


def calibrated_checkpoint(args, image: Path, tile: int) -> Path:
    """Random DeepLabV3-ResNet101 weights (seed 0) whose BatchNorm running statistics are
    recomputed on tiles of this image at stride 8, so activations have sane scales; saved as a
    torchvision state dict (the geometry tilepipe then picks with ``output_stride``)."""
    path = args.workdir / f"deeplabv3_resnet101_random_bncal_{image.stem}_{tile}.pth"
    if path.exists():
        return path
    loaded = load_model(ModelSpec(architecture="deeplabv3_resnet101", weights="none", output_stride=8))
    device = args.device_obj
    module = loaded.module.to(device)
    source = open_source(SourceSpec(path=str(image)))
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
        loaded = cached_model(ModelSpec(architecture="deeplabv3_resnet101", weights=checkpoint, output_stride=stride,
                                        bands=3))  # the run's, cached
        tile_hw = (min(args.tile_size, side), min(args.tile_size, side))
        r["macs_per_tile"] = loaded.macs_per_tile(*tile_hw, output_stride=stride)
        r["macs_counted_on"] = list(tile_hw)
        engine = cached_engine(loaded.spec, EngineOptions(device=args.device, precision=args.precision,
                                                          batch_size=args.batch_size, compile=args.compile))
        batch = min(engine.batch_size_for(*tile_hw), r["tiles_computed"])
        with Phase(engine.device) as phase:
            r["ceiling"] = measure_ceiling(engine, tile_hw, batch, args.ceiling_seconds)
        r["ceiling"].update(phase.memory())
        classes, counts = np.unique(masks[stride], return_counts=True)
        r["classes_present"] = int(len(classes))
        r["largest_class_share"] = rounded(counts.max() / counts.sum())
        results[stride] = r
        print_tilepipe(f"output stride {stride}", r)
        c = r["ceiling"]
        print(f"  bare forward (batch {c['batch_size']}, {engine.precision}): {c['tile_megapixels_per_second']:.4g} tile "
              f"MP/s ({c['passes']} passes in {c['seconds']:.2f} s after {c['warmup_passes']} warm-up)")
        print(f"  {r['macs_per_tile'] / 1e9:.2f} G multiply-adds per {tile_hw[0]} x {tile_hw[1]} tile; mask has "
              f"{r['classes_present']} classes, the largest covers {r['largest_class_share']:.1%}", flush=True)
    agreement = float((masks[8] == masks[16]).mean())
    speedup = ratio(results[16]["megapixels_per_second_blocks_only"], results[8]["megapixels_per_second_blocks_only"])
    speedup_bare = ratio(results[16]["ceiling"]["tile_megapixels_per_second"],
                          results[8]["ceiling"]["tile_megapixels_per_second"])
    print(f"stride 16 / stride 8: {speedup:.2f}x MP/s end to end (blocks only), {speedup_bare:.2f}x bare forward, "
          f"{results[8]['macs_per_tile'] / results[16]['macs_per_tile']:.2f}x fewer multiply-adds per tile")
    print(f"pixel agreement of the two masks: {agreement:.1%}  [{caveat}]", flush=True)
    return {"crop": side, "crop_path": str(crop), "checkpoint": checkpoint, "weights_note": weights_note,
            "stride_8": results[8], "stride_16": results[16], "pixel_agreement": rounded(agreement, 6),
            "speedup_16_over_8": rounded(speedup), "speedup_16_over_8_bare_forward": rounded(speedup_bare)}


