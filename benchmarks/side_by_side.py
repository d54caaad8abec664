"""``throughput.py``'s default mode: on one image, with one tile size, overlap, batch size and
precision, in one process and side by side:

1. **ceiling**: the bare network on random batches already on the device, in tile MP/s at
   tilepipe's batch size (``measure.measure_ceiling``);
2. **tilepipe**: ``tilepipe.run`` GeoTIFF -> Zarr on local disk, figures from its summary;
3. **naive**: a tile-by-tile loop (``baselines.measure_naive``);
4. **MONAI**: ``sliding_window_inference`` on the largest crop that fits (``baselines.measure_monai``),
   and tilepipe on the same crop for the ratio.

Then the ratios, and the issue's GPU targets as PASS/FAIL: tilepipe at least 0.85 x the ceiling
divided by the lattice factor (network pixels per image pixel if each lattice tile ran once), 1.5 x
MONAI, 5 x the naive loop, and a GPU busy fraction of at least 90%.
"""

from __future__ import annotations

from pathlib import Path

import torch

from _common import build_crop
from baselines import measure_monai, measure_naive, monai_crop_side
from measure import (MB, Phase, measure_ceiling, memory_text, print_tilepipe, process_peak_rss, ratio, rounded,
                     run_kwargs, run_tilepipe)
from tilepipe.config import resolve_settings
from tilepipe.preparation import prepare

TARGETS = {"tilepipe_over_ceiling_per_lattice": 0.85, "tilepipe_over_monai": 1.5, "tilepipe_over_naive": 5.0,
           "gpu_busy_fraction": 0.90}


def gpu_targets(tp: dict, ceiling: dict | None, naive: dict | None, monai: dict | None, tp_crop: dict | None,
                busy: float | None, cuda: bool) -> dict:
    """Each target's measured value, threshold and verdict: None where a part was skipped, and on a
    CPU, where these GPU targets do not apply (the values are still given)."""
    values = {
        "tilepipe_over_ceiling_per_lattice": ratio(tp["megapixels_per_second"],
                                                   ceiling["tile_megapixels_per_second"] / tp["lattice_factor"])
        if ceiling and tp["lattice_factor"] else None,
        "tilepipe_over_monai": ratio(tp_crop["megapixels_per_second"], monai["megapixels_per_second"]) if monai else None,
        "tilepipe_over_naive": ratio(tp["megapixels_per_second"], naive["megapixels_per_second"]) if naive else None,
        "gpu_busy_fraction": busy,
    }
    return {k: {"value": rounded(v), "target": TARGETS[k], "pass": None if v is None or not cuda else v >= TARGETS[k]}
            for k, v in values.items()}


def stride_table(results: dict[int, dict]) -> list[str]:
    """The side-by-side table of every output stride measured, as markdown lines."""
    lines = ["| output stride | ceiling image MP/s | tilepipe MP/s | naive MP/s | MONAI MP/s | tilepipe / (ceiling / "
             "lattice factor) | tilepipe / MONAI | tilepipe / naive | GPU busy |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(value, fmt="{:.4g}"):
        return "-" if value is None else fmt.format(value)

    for stride, r in results.items():
        t = r["targets"]
        ran = r.get("ran_at_output_stride", stride)
        lines.append(
            f"| {stride}{'' if ran == stride else f' (ran at {ran})'} "
            f"| {cell((r['ceiling'] or {}).get('image_megapixels_per_second'))} "
            f"| {cell(r['tilepipe']['megapixels_per_second'])} | {cell((r['naive'] or {}).get('megapixels_per_second'))} "
            f"| {cell((r['monai'] or {}).get('megapixels_per_second'))} "
            + "".join(f"| {cell(t[k]['value'], '{:.3f}')} " for k in TARGETS) + "|")
    return lines


def compare(args, image: Path) -> dict:
    tp_store = args.workdir / f"throughput_{image.stem}_{args.model}_os{args.output_stride or 'default'}.zarr"
    settings = resolve_settings(**run_kwargs(args))
    prepared = prepare(str(image), str(tp_store), settings)  # the engine tilepipe.run will reuse (cached)
    engine, plan = prepared.engine, prepared.plan
    tile = (plan.tile_height, plan.tile_width)
    batch = engine.batch_size_for(*tile)
    print(f"device: {engine.device} ({engine.device_name}), precision {engine.precision}, batch {batch}, "
          f"torch threads {torch.get_num_threads()}, model {args.model} (weights {engine.model.weights_identity}, "
          f"output stride {engine.model.output_stride})", flush=True)
    print(f"plan: {plan.megapixels:.2f} MP, tiles {tile[0]} x {tile[1]}, overlap {args.overlap}, "
          f"{plan.block_count} blocks, overlap cost factor {plan.overlap_cost_factor:.3f}", flush=True)
    out = {"plan": {"megapixels": rounded(plan.megapixels, 6), "tile": list(tile), "overlap": args.overlap,
                    "overlap_cost_factor": rounded(plan.overlap_cost_factor), "blocks": plan.block_count},
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
              f"{memory_text(naive)}", flush=True)

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
        print(f"  {memory_text(monai)}")
        if crop == image:
            tp_crop = dict(tp, note="the whole image: the tilepipe run above")
        else:
            tp_crop = run_tilepipe(crop, tp_store.with_name(f"crop_{tp_store.name}"), run_kwargs(args))
            print_tilepipe(f"tilepipe on the same {side} x {side} crop", tp_crop)

    ratios = {}
    if ceiling:
        ceiling_image = ceiling["tile_megapixels_per_second"] / tp["overlap_cost_factor"]
        ceiling["image_megapixels_per_second"] = rounded(ceiling_image, 6)
        ratios["tilepipe_over_ceiling"] = rounded(ratio(tp["megapixels_per_second"], ceiling_image))
        ratios["tilepipe_blocks_only_over_ceiling"] = rounded(ratio(tp["megapixels_per_second_blocks_only"], ceiling_image))
    if naive:
        ratios["tilepipe_over_naive"] = rounded(ratio(tp["megapixels_per_second"], naive["megapixels_per_second"]))
        # per pixel the network computed: the naive loop computes each image pixel once (no overlap)
        ratios["tilepipe_over_naive_per_network_pixel"] = rounded(ratio(
            tp["megapixels_per_second"] * tp["overlap_cost_factor"], naive["megapixels_per_second"]))
    if monai:
        ratios["tilepipe_over_monai_same_crop"] = rounded(ratio(tp_crop["megapixels_per_second"],
                                                            monai["megapixels_per_second"]))
        if monai["overlap_cost_factor"]:
            ratios["tilepipe_over_monai_per_network_pixel"] = rounded(ratio(
                tp_crop["megapixels_per_second"] * tp_crop["overlap_cost_factor"],
                monai["megapixels_per_second"] * monai["overlap_cost_factor"]))
    busy = tp["gpu_busy_fraction"] if engine.cuda else tp["forward_busy_over_blocks_wall"]
    busy_label = ("GPU busy fraction of the steady state (CUDA events; the run summary's engine.gpu_busy_fraction)"
                  if engine.cuda else "engine busy fraction on the CPU (forward busy s / blocks wall s; not a GPU figure)")
    targets = gpu_targets(tp, ceiling, naive, monai, tp_crop, busy, engine.cuda)

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
    print(f"{busy_label}: {busy}")
    if tp["nvml_gpu_utilisation"] is not None:
        print(f"NVML GPU utilisation during the tilepipe run (mean of samples): {tp['nvml_gpu_utilisation']:.1%}")
    for name, t in targets.items():
        verdict = "n/a" if t["pass"] is None else "PASS" if t["pass"] else "FAIL"
        print(f"target {name}: {t['value']} vs {t['target']}: {verdict}" + ("" if engine.cuda else " (a GPU target)"))
    print(f"peak host RSS of the whole benchmark process (ru_maxrss and the phases' peaks): "
          f"{process_peak_rss() / MB:.0f} MB", flush=True)
    out.update(ceiling=ceiling, tilepipe=tp, naive=naive, monai=monai, tilepipe_on_monai_crop=tp_crop,
               ratios=ratios, targets=targets,
               busy_fraction={"label": busy_label, "value": busy, "nvml_mean_utilisation": tp["nvml_gpu_utilisation"]})
    return out


