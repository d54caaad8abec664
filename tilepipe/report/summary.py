"""The run summary: what ran, what it cost, where the time went; kept in the store and beside it.

Every figure comes from this run's own measurements (or, for multiply-adds, from counting the
network as it ran). Stage times are *busy* seconds summed over the block tasks: with several
workers, reading and writing overlap the forward pass, so busy times may add up to more than the
blocks' wall time; the summary states that overlap instead of hiding it. The wall time itself is
split into parts that run one after another (setup, blocks, finalise) and add up to it.

The two explanatory sections are pure functions of the figures: :func:`tilepipe.report.tactics.tactics_used`
("How the network stays fast here"), :func:`tilepipe.cost.cost_sentences` ("Where the
multiply-adds go") and :func:`bottleneck`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from ..blocks import STAGES, BlockReport
from ..sink import NO_LABEL
from ..sizing import sizing_note

LIBRARIES = ("tilepipe", "torch", "torchvision", "numpy", "rasterio", "zarr", "dask", "distributed", "pydicom")


@dataclass
class Summary:
    data: dict
    files: list[str] = field(default_factory=list)
    """Where the summary was written beside the store."""

    def __getitem__(self, key):
        return self.data[key]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, default=_jsonable)

    def to_markdown(self) -> str:
        return render_markdown(self.data)

    @property
    def ok(self) -> bool:
        return not self.data["failed_blocks"]


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return versions


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def build_summary(prepared, reports: list[BlockReport], store_url: str, setup_seconds: float,
                  blocks_seconds: float, started: float, scheduling, slots: int, reused: int = 0,
                  pyramid: dict | None = None) -> Summary:
    """``slots``: block tasks that could run at once (threads, worker threads, or GPUs);
    ``pyramid``: the levels built after the blocks and their seconds (:mod:`tilepipe.pyramid`)."""
    from ..cost import cost_figures, cost_sentences
    from ..origins import settings_origins
    from .tactics import tactics_used

    pyramid = pyramid or {"levels": [], "seconds": 0.0, "built": False}
    finalize_start = time.perf_counter()
    p, source, model, options = prepared.plan, prepared.source, prepared.model, prepared.options
    busy = {stage: sum(r.seconds.get(stage, 0.0) for r in reports) for stage in STAGES}
    busy_total = sum(busy.values())
    tiles = sum(r.tiles for r in reports)
    no_data = [r for r in reports if r.no_data]
    failed = [r for r in reports if r.error]
    tiles_no_data = sum(r.tiles_skipped for r in reports)
    tiles_planned = tiles + tiles_no_data
    processed = sum(p.block(r.index).core.area for r in reports) / 1e6
    cost = cost_figures(model, (p.tile_height, p.tile_width))  # counted once, on the meta device
    macs = cost["macs_per_tile"]
    forward_flops = 2 * macs * tiles
    warnings = []
    if model.random_weights:
        warnings.append("RANDOM WEIGHTS: this mask is meaningless; it only exercises the pipeline (--weights none).")
    if failed:
        warnings.append(f"{len(failed)} block(s) failed; the store is incomplete (finish it with --resume).")
    if len(no_data) == p.block_count:
        warnings.append(f"ALL NO-DATA: every pixel of the input is no-data (nodata, NaN or Inf); the mask is {NO_LABEL} "
                        "everywhere.")
    data_engine = engine_as_run(reports, prepared.engine)
    described = source.describe()
    warnings += described.get("warnings", [])
    data = {
        "tilepipe_summary": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "failed" if failed else "complete",
        "run_id": prepared.context.run_id,
        "warnings": warnings,
        "input": {**described, "megapixels": _r(p.megapixels, 6)},
        "output": {"store": store_url, "mask_shape": [*p.stack_shape, p.height, p.width],
                   "chunks": [p.chunk_size, p.chunk_size], "probabilities": options.probabilities,
                   "pyramid_levels": [list(shape) for shape in pyramid["levels"]] if pyramid["built"] else None},
        "model": {
            **model.describe(),
            "macs_per_tile": macs,
            "macs_counted_on": [p.tile_height, p.tile_width],
            "macs_note": "multiply-adds of one forward pass as run (no auxiliary head), counted at run time "
                         "with torch.utils.flop_counter on a meta-device copy",
            "card_file": prepared.card_file.describe() if prepared.card_file else None,
        },
        "cost": cost,
        "settings": settings_origins(prepared, described),
        "engine": data_engine,
        "plan": {
            "tile": [p.tile_height, p.tile_width],
            "overlap": p.grid.overlap,
            "output_stride": p.grid.output_stride,
            "blending": options.blending,
            "chunk_size": p.chunk_size,
            "block_size": p.block_size,
            "strips": p.strips,
            "strip_width": p.strip_width,
            "blocks": p.block_count,
            "blocks_run": len(reports),
            "blocks_reused": reused,
            "blocks_no_data": len(no_data),
            "blocks_failed": len(failed),
            "lattice_tiles": p.lattice_tiles,
            "tiles_planned": tiles_planned,
            "tiles_computed": tiles,
            "tiles_skipped_no_data": tiles_no_data,
            "compute_saved_by_skipping": _r(tiles_no_data / tiles_planned) if tiles_planned else 0.0,
            "overlap_cost_factor": _r(p.overlap_cost_factor),
            "read_megapixels": _r(sum(r.read_pixels for r in reports) / 1e6),
            "largest_read_megapixels": _r(max((r.largest_read_pixels for r in reports), default=0) / 1e6),
            "forward_calls": sum(r.forward_calls for r in reports),
            "chunks_written": sum(_chunks(p.block(r.index).core, p.chunk_size) for r in reports if not r.error),
        },
        "timing": {
            "stage_busy_seconds": {k: _r(v) for k, v in busy.items()},
            "stage_share_of_block_busy": {k: _r(v / busy_total) if busy_total else 0.0 for k, v in busy.items()},
            "busy_over_blocks_wall": _r(busy_total / blocks_seconds, 3) if blocks_seconds else 0.0,
        },
        "environment": {
            "workers": slots,
            "sizing": sizing_note(str(data_engine["device"]).split(":")[0], options.workers, slots),
            "scheduler": scheduling.describe(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "libraries": library_versions(),
        },
        "failed_blocks": [{"index": list(r.index), "core": r.core, "error": r.error} for r in failed],
    }
    data["bottleneck"] = data["tactics"] = None  # filled below, from the figures
    finalize_seconds = time.perf_counter() - finalize_start
    wall = time.perf_counter() - started
    timing = data["timing"]
    timing.update(
        wall_seconds=_r(wall),
        sequential_seconds={"setup": _r(setup_seconds), "blocks": _r(blocks_seconds), "pyramid": _r(pyramid["seconds"]),
                            "finalize": _r(finalize_seconds)},
        stage_share_of_wall={k: _r(v / wall) for k, v in busy.items()},
        overlap=_overlap_note(busy_total, blocks_seconds, data["environment"]["workers"]),
    )
    forward = busy["forward"]
    peak = data["engine"]["peak_tflops"]
    warmup = data["engine"]["compile_warmup_seconds"]
    data["throughput"] = {
        "megapixels_processed": _r(processed, 6),
        "megapixels_per_second": _r(processed / wall, 6),
        "megapixels_per_second_excluding_warmup": _r(processed / (wall - warmup), 6) if warmup else None,
        "tiles_per_second": _r(tiles / wall, 6),
        "model_tflops_while_running": _r(forward_flops / forward / 1e12, 6) if forward else 0.0,
        "model_tflops_over_wall": _r(forward_flops / wall / 1e12, 6),
        "fraction_of_device_peak": _r(forward_flops / forward / 1e12 / peak) if forward and peak else None,
    }
    data["bottleneck"] = bottleneck(data, p, model)
    data["tactics"] = tactics_used(data)
    data["cost"]["sentences"] = cost_sentences(data)
    return Summary(json.loads(json.dumps(data, default=_jsonable)))  # plain JSON types, as stored


def engine_as_run(reports: list[BlockReport], local_engine=None) -> dict:
    """The engine as the block reports describe it: what ran, on whichever workers ran it.

    Each report carries its worker's engine (``Engine.describe()``); a figure all workers agree on
    is given as is, one they differ on as the distinct values joined by " + " (batch sizes
    chosen per tile shape are merged). Warm-up seconds add up over workers. With no block run (a
    resumed store with nothing left) the engine of this process stands in, if it was loaded."""
    per_worker = {r.worker: r.engine for r in reports if r.engine}  # a worker's last report is its latest state
    engines = list(per_worker.values())
    if not engines:
        if local_engine is None:
            return {"device": "none (no block ran)", "device_name": "none", "peak_tflops": None, "precision": "none",
                    "batch_size": "none", "torch_threads": 0, "compile_warmup_seconds": 0.0,
                    "gpu_busy_fraction": None, "tactics": {},
                    "engines_reporting": 0}
        engines = [local_engine.describe()]

    def agreed(key):
        values = [e[key] for e in engines]
        if all(v == values[0] for v in values):
            return values[0]
        if all(isinstance(v, dict) for v in values):
            return {k: v for d in values for k, v in d.items()}
        return " + ".join(sorted({json.dumps(v) if isinstance(v, dict) else str(v) for v in values}))

    tactics = {}
    for e in engines:
        tactics.update(e["tactics"])
    peaks = {e["peak_tflops"] for e in engines}
    busy = [e["gpu_busy_fraction"] for e in engines if e.get("gpu_busy_fraction") is not None]
    return {
        "device": agreed("device"),
        "device_name": agreed("device_name"),
        "peak_tflops": peaks.pop() if len(peaks) == 1 else None,
        "precision": agreed("precision"),
        "batch_size": agreed("batch_size"),
        "torch_threads": agreed("torch_threads"),
        "compile_warmup_seconds": round(sum(e["compile_warmup_seconds"] for e in engines), 4),
        "gpu_busy_fraction": round(sum(busy) / len(busy), 4) if busy else None,  # the mean over the GPUs
        "tactics": tactics,
        "engines_reporting": len(per_worker) or 1,
    }


def _chunks(core, chunk: int) -> int:
    return -(-core.height // chunk) * -(-core.width // chunk)


def _overlap_note(busy_total: float, blocks_wall: float, workers: int) -> str:
    if blocks_wall <= 0:
        return "no blocks ran"
    ratio = busy_total / blocks_wall
    if ratio > 1.02:
        return (f"stages overlapped ({workers} block task(s) at once, each preparing its next batches while the "
                f"model runs): {busy_total:.2f} s of stage work in {blocks_wall:.2f} s of wall time ({ratio:.2f}x), "
                "so stage times add up to more than the wall time")
    return f"stages ran one after another: {busy_total:.2f} s of stage work in {blocks_wall:.2f} s of wall time"


def bottleneck(d: dict, plan, model) -> dict:
    """The stage that dominated and what would make this run faster, from its measured shares."""
    busy = d["timing"]["stage_busy_seconds"]
    wall = d["timing"]["wall_seconds"]
    stage = max(busy, key=busy.get)
    share = busy[stage] / wall if wall else 0.0
    advice = []
    setup = d["timing"]["sequential_seconds"]["setup"]
    if wall and setup / wall > 0.3:
        advice.append(f"setup (opening the input, loading weights) took {setup:.1f} s of {wall:.1f} s: a fixed cost "
                      "that larger inputs amortise")
    eng, pl = d["engine"], d["plan"]
    if stage == "forward":
        if eng["device"] == "cpu":
            advice.append(f"the network ran on the CPU at {d['throughput']['model_tflops_while_running']:.3f} TFLOP/s; "
                          "a CUDA GPU (--device cuda) is the change that matters")
        else:
            if eng["precision"] == "fp32":
                advice.append("use --precision bf16 (tensor cores)")
            advice.append(f"try a larger --batch-size than {eng['batch_size']}")
        if pl["output_stride"] == 8 and model.spec.architecture != "standin":
            cheaper = d["cost"]["other_output_strides"]["16"]
            advice.append(f"--output-stride 16 needs {cheaper / 1e9:.1f} G multiply-adds per tile instead of "
                          f"{d['model']['macs_per_tile'] / 1e9:.1f} G (check the accuracy trade-off)")
        if pl["overlap_cost_factor"] > 1.3 and plan.block_size * 2 <= max(plan.height, plan.width) * 2:
            bigger = type(plan)(plan.height, plan.width, plan.grid, plan.chunk_size, plan.block_size * 2, plan.depth)
            if bigger.overlap_cost_factor < plan.overlap_cost_factor - 0.01:
                advice.append(f"--block-size {bigger.block_size} would lower the overlap cost factor from "
                              f"{plan.overlap_cost_factor:.2f} to {bigger.overlap_cost_factor:.2f} "
                              "(more memory per block)")
    elif stage == "read":
        advice.append("reading dominates: use a tiled, compressed input (a COG), a local copy, or more --workers")
    elif stage == "stitch":
        advice.append("blending dominates: it runs on the engine's device, so a GPU speeds it up; "
                      "--blending crop is cheaper than gaussian")
    elif stage == "write":
        advice.append("writing dominates: use a faster disk or a larger --chunk-size")
    elif stage == "preprocess":
        advice.append("scaling tiles dominates: more --workers spread it over cores")
    return {"stage": stage, "share_of_wall": _r(share), "advice": advice}


def _picture_lines(output: dict) -> list[str]:
    """Where the pyramid and the timeline picture are (the picture is linked by its file name: it
    lies beside the summary)."""
    levels = output.get("pyramid_levels")
    lines = [f"- Pyramid: {len(levels)} level(s) below the mask "
             f"({', '.join(' x '.join(map(str, s)) for s in levels) or 'the mask is already small'}), 2x2 mode"
             ] if levels is not None else []
    if output.get("timeline"):
        name = output["timeline"].rsplit("/", 1)[-1]
        lines.append(f"- Timeline of the blocks, stage by stage, and the engine's busy fraction: [{name}]({name})")
    elif output.get("timeline_note"):
        lines.append(f"- {output['timeline_note']}")
    return lines


def render_markdown(d: dict) -> str:
    from ..cost import render_cost
    from ..origins import render_settings

    inp, plan, timing, thr, model, eng = d["input"], d["plan"], d["timing"], d["throughput"], d["model"], d["engine"]
    lines = ["# tilepipe run summary", ""]
    lines += [f"> **{w}**" for w in d["warnings"]]
    if d["warnings"]:
        lines.append("")
    mp = inp["megapixels"]
    lines += [
        f"Status: **{d['status']}**, {d['created']}, run {d.get('run_id') or '-'}. "
        f"{thr['megapixels_processed']} MP in {timing['wall_seconds']:.2f} s: "
        f"**{thr['megapixels_per_second']} MP/s** on {eng['device']} ({eng['device_name']}). "
        f"Store `{d['output']['store']}`, mask {' x '.join(map(str, d['output']['mask_shape']))} uint8.",
        "",
        "## Input",
        f"- `{inp['path']}`: {inp['format']}, {inp['width']} x {inp['height']} px"
        + (f" x {inp['depth']} planes" if inp.get("depth") else "")
        + f" ({mp} MP), {inp['dtype']}, bands {inp['bands_used']} of {inp['band_count']}"
        + "".join(f", {inp[k]}" for k in ("layout", "compression") if inp.get(k)),
        f"- Scaling: {inp['scaling']['method']} from {inp['scaling']['sample']} "
        f"(low {inp['scaling']['low']}, high {inp['scaling']['high']})",
        "",
        "## Model",
        f"- {model['architecture']}, weights {model['weights']}, output stride {model['output_stride']}, "
        f"{model['num_classes']} classes, {model['parameters'] / 1e6:.1f} M parameters",
        f"- {model['macs_per_tile'] / 1e9:.2f} G multiply-adds per {model['macs_counted_on'][0]} x "
        f"{model['macs_counted_on'][1]} tile ({model['macs_note']})",
        *([f"- Model card `{model['card_file']['path']}` (sha256 {model['card_file']['sha256']}): "
           f"{model['card_file']['name'] or 'unnamed'}, provenance {json.dumps(model['card_file']['provenance'])}"]
          if model.get("card_file") else []),
        f"- Device {eng['device']} ({eng['device_name']}), precision {eng['precision']}, batch {eng['batch_size']}",
        "",
        "## Plan",
        f"- Tiles {plan['tile'][0]} x {plan['tile'][1]}, overlap {plan['overlap']}, {plan['blending']} blending; "
        f"{plan['strips']} strip(s) of {plan['strip_width']} px (at most {plan['block_size']}), "
        f"{plan['blocks']} blocks of one {plan['chunk_size']} px chunk row each",
        f"- Tiles computed {plan['tiles_computed']} of {plan['tiles_planned']} planned (lattice {plan['lattice_tiles']}), "
        f"overlap cost factor {plan['overlap_cost_factor']}",
        *([f"- Resumed: {plan['blocks_reused']} finished blocks reused, {plan['blocks_run']} run now"]
          if plan["blocks_reused"] else []),
        f"- Skipped as no-data: {plan['blocks_no_data']} blocks, {plan['tiles_skipped_no_data']} tiles "
        f"({plan['compute_saved_by_skipping']:.1%} of planned compute)",
        "",
        "## Time",
        f"- Wall {timing['wall_seconds']:.2f} s = setup {timing['sequential_seconds']['setup']:.2f} s + blocks "
        f"{timing['sequential_seconds']['blocks']:.2f} s + pyramid {timing['sequential_seconds']['pyramid']:.2f} s "
        f"+ finalise {timing['sequential_seconds']['finalize']:.2f} s",
        f"- {timing['overlap']}",
        *_picture_lines(d["output"]),
        "",
        "| stage | busy s | share of wall | share of stage work |",
        "|---|---:|---:|---:|",
    ]
    for stage, seconds in timing["stage_busy_seconds"].items():
        lines.append(f"| {stage} | {seconds:.3f} | {timing['stage_share_of_wall'][stage]:.1%} | "
                     f"{timing['stage_share_of_block_busy'][stage]:.1%} |")
    peak = thr["fraction_of_device_peak"]
    lines += [
        "",
        "## Throughput",
        f"- {thr['megapixels_per_second']} image megapixels/s, {thr['tiles_per_second']} tiles/s",
        f"- Model: {thr['model_tflops_while_running']} TFLOP/s while running, {thr['model_tflops_over_wall']} over the wall time"
        + (f", {peak:.1%} of the device's peak" if peak is not None else ""),
        *([f"- GPU busy {eng['gpu_busy_fraction']:.1%} of the steady state (forward passes timed with CUDA events)"]
          if eng.get("gpu_busy_fraction") is not None else []),
        "",
        "## Bottleneck",
        f"- {d['bottleneck']['stage']}: {d['bottleneck']['share_of_wall']:.1%} of the wall time",
        *[f"- {a}" for a in d["bottleneck"]["advice"]],
        "",
        f"## How {model['architecture']} stays fast here",
        *[f"- **{t['name']}**: {t['text']} [{', '.join(t['references'])}]" for t in d["tactics"]],
        "",
        *render_cost(d),
        "",
        *render_settings(d["settings"]),
    ]
    if d["failed_blocks"]:
        lines += ["", "## Failed blocks", *[f"- block {b['index']} ({b['core']}): {b['error']}" for b in d["failed_blocks"]]]
    env = d["environment"]
    lines += ["", "## Environment",
              f"- Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs, {env['workers']} worker(s), {env['scheduler']}",
              *([f"- Sizing: {env['sizing']['tasks_at_once']} task(s) at once ({env['sizing']['tasks_rule']}), "
                 f"{env['sizing']['reader_threads']} reader threads ({env['sizing']['reader_threads_rule']})"]
                if env.get("sizing") else []),
              "- " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()),
              "", "References are ids in tilepipe's catalog: `tilepipe catalog ID` shows one.", ""]
    return "\n".join(lines)
