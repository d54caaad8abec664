"""The run summary as markdown (``<store>.summary.md``, ``tilepipe summary STORE``, ``--explain``).

:func:`render_markdown` is a pure function of the summary's JSON, so a stored summary renders
the same wherever the store goes. It computes nothing: every number it prints is a figure of
:mod:`.figures`, a sentence of :mod:`.advice`, :mod:`.tactics`, :mod:`.cost` or
:mod:`.origins`; one function per section, in the order they appear, except the cost and
settings sections, which :mod:`.cost` and :mod:`.origins` render beside the figures they hold.
"""

from __future__ import annotations

import json

from .cost import render_cost
from .origins import render_settings


def render_markdown(d: dict) -> str:
    """The whole report, from the summary ``d`` (``summary.json``)."""
    lines = ["# tilepipe run summary", ""]
    lines += [f"> **{w}**" for w in d["warnings"]]
    if d["warnings"]:
        lines.append("")
    lines += [
        *_status(d), "",
        *_input(d["input"]), "",
        *_model(d["model"], d["engine"]), "",
        *_plan(d["plan"]), "",
        *_measures(d.get("measures")), "",
        *_time(d["timing"], d["output"]), "",
        *_throughput(d["throughput"], d["engine"]), "",
        *_bottleneck(d["bottleneck"]), "",
        f"## How {d['model']['architecture']} stays fast here",
        *[f"- **{t['name']}**: {t['text']} [{', '.join(t['references'])}]" for t in d["tactics"]], "",
        *render_cost(d), "",
        *render_settings(d["settings"]),
    ]
    if d["failed_blocks"]:
        lines += ["", "## Failed blocks", *[f"- block {b['index']} ({b['core']}): {b['error']}" for b in d["failed_blocks"]]]
    lines += ["", *_environment(d["environment"]),
              "", "References are ids in tilepipe's catalog: `tilepipe catalog ID` shows one.", ""]
    return "\n".join(lines)


def _status(d: dict) -> list[str]:
    thr, timing, eng = d["throughput"], d["timing"], d["engine"]
    return [f"Status: **{d['status']}**, {d['created']}, run {d.get('run_id') or '-'}. "
            f"{thr['megapixels_processed']} MP in {timing['wall_seconds']:.2f} s: "
            f"**{thr['megapixels_per_second']} MP/s** on {eng['device']} ({eng['device_name']}). "
            f"Store `{d['output']['store']}`, mask {' x '.join(map(str, d['output']['mask_shape']))} uint8."]


def _input(inp: dict) -> list[str]:
    return [
        "## Input",
        f"- `{inp['path']}`: {inp['format']}, {inp['width']} x {inp['height']} px"
        + (f" x {inp['depth']} planes" if inp.get("depth") else "")
        + f" ({inp['megapixels']} MP), {inp['dtype']}, bands {inp['bands_used']} of {inp['band_count']}"
        + "".join(f", {inp[k]}" for k in ("layout", "compression") if inp.get(k)),
        f"- Scaling: {inp['scaling']['method']} from {inp['scaling']['sample']} "
        f"(low {inp['scaling']['low']}, high {inp['scaling']['high']})"
        + (", volume 0's; each volume is windowed on its own:" if inp.get("volume_windows") else ""),
        *(f"  - volume {v} ({', '.join(f'{k} {x}' for k, x in w['labels'].items()) or 'unlabelled'}): "
          f"{w['scaling']['method']}, low {w['scaling']['low']}, high {w['scaling']['high']}"
          for v, w in enumerate(inp.get("volume_windows") or ())),
    ]


def _model(model: dict, eng: dict) -> list[str]:
    card = model.get("card_file")
    return [
        "## Model",
        f"- {model['architecture']}, weights {model['weights']}, output stride {model['output_stride']}, "
        f"{model['num_classes']} classes, {model['parameters'] / 1e6:.1f} M parameters",
        f"- {model['macs_per_tile'] / 1e9:.2f} G multiply-adds per {model['macs_counted_on'][0]} x "
        f"{model['macs_counted_on'][1]} tile ({model['macs_note']})",
        *([f"- Model card `{card['path']}` (sha256 {card['sha256']}): "
           f"{card['name'] or 'unnamed'}, provenance {json.dumps(card['provenance'])}"] if card else []),
        f"- Device {eng['device']} ({eng['device_name']}), precision {eng['precision']}, batch {eng['batch_size']}",
    ]


def _plan(plan: dict) -> list[str]:
    return [
        "## Plan",
        f"- Tiles {plan['tile'][0]} x {plan['tile'][1]}, overlap {plan['overlap']}, {plan['blending']} blending; "
        f"{plan['strips']} strip(s) of {plan['strip_width']} px (at most {plan['block_size']}), "
        f"{plan['blocks']} blocks of one {plan['chunk_size']} px chunk row each",
        f"- Tiles computed {plan['tiles_computed']} of {plan['tiles_planned']} planned (lattice {plan['lattice_tiles']}), "
        f"overlap cost factor {plan['overlap_cost_factor']}",
        *([f"- Resumed: {plan['blocks_reused']} finished blocks reused, {plan['blocks_run']} run now"
           + (f", {plan['blocks_repaired']} repaired (their chunks were missing)" if plan["blocks_repaired"] else "")]
          if plan["blocks_reused"] else []),
        f"- Skipped as no-data: {plan['blocks_no_data']} blocks, {plan['tiles_skipped_no_data']} tiles "
        f"({plan['compute_saved_by_skipping']:.1%} of planned compute)",
    ]


QUANTITIES = {"area_m2": "m²", "area_ha": "ha", "area_mm2": "mm²", "volume_mm3": "mm³", "volume_ml": "mL"}
"""The measures a class row may carry (:mod:`tilepipe.measure_units`), in column order, with their units."""


def _measures(m: dict | None) -> list[str]:
    """Per-class pixels, shares, areas or volumes; a 4-D series adds one table per volume."""
    if m is None:  # a summary stored before tilepipe measured classes
        return []
    if "classes" not in m:
        return ["## Measures per class", f"- {m['note']}"]
    lines = ["## Measures per class", f"- {m['pixel']}; {m['valid_pixels']:,} valid pixels, from {m['blocks_tallied']}",
             "", *_class_table(m["classes"])]
    for volume in m.get("volumes", []):
        lines += ["", f"Volume {volume['volume']}:", "", *_class_table(volume["classes"])]
    return lines


def _class_table(classes: list[dict]) -> list[str]:
    if not classes:
        return ["- no valid pixel"]
    keys = [k for k in QUANTITIES if k in classes[0]]
    rows = [["class", "pixels", "share of valid", *(QUANTITIES[k] for k in keys)],
            ["---", *["---:"] * (2 + len(keys))],
            *[[f"{c['id']} {c['name']}", f"{c['pixels']:,}", f"{c['share']:.2%}", *(_quantity(c[k]) for k in keys)]
              for c in classes]]
    return ["| " + " | ".join(row) + " |" for row in rows]


def _quantity(value: float) -> str:
    """Six significant digits, without an exponent for the large areas a scene has."""
    return f"{value:,.0f}" if abs(value) >= 1e6 else f"{value:,.6g}"


def _time(timing: dict, output: dict) -> list[str]:
    parts = timing["sequential_seconds"]
    return [
        "## Time",
        f"- Wall {timing['wall_seconds']:.2f} s = setup {parts['setup']:.2f} s + blocks {parts['blocks']:.2f} s "
        f"+ pyramid {parts['pyramid']:.2f} s + finalise {parts['finalize']:.2f} s",
        f"- {timing['overlap']}",
        *_picture_lines(output),
        "",
        "| stage | busy s | share of wall | share of stage work |",
        "|---|---:|---:|---:|",
        *[f"| {stage} | {seconds:.3f} | {timing['stage_share_of_wall'][stage]:.1%} | "
          f"{timing['stage_share_of_block_busy'][stage]:.1%} |" for stage, seconds in timing["stage_busy_seconds"].items()],
    ]


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


def _throughput(thr: dict, eng: dict) -> list[str]:
    peak = thr["fraction_of_device_peak"]
    return [
        "## Throughput",
        f"- {thr['megapixels_per_second']} image megapixels/s, {thr['tiles_per_second']} tiles/s",
        f"- Model: {thr['model_tflops_while_running']} TFLOP/s while running, {thr['model_tflops_over_wall']} over the wall time"
        + (f", {peak:.1%} of the device's peak" if peak is not None else ""),
        *([f"- GPU busy {eng['gpu_busy_fraction']:.1%} of the steady state (forward passes timed with CUDA events)"]
          if eng.get("gpu_busy_fraction") is not None else []),
        *([f"  - {g['gpu']} ({g['device_name']}, worker {g['worker']}): "
           + (f"busy {g['busy_fraction']:.1%}" if g["busy_fraction"] is not None else "busy fraction not measured")
           for g in eng.get("gpus", [])] if len(eng.get("gpus", [])) > 1 else []),
    ]


def _bottleneck(neck: dict) -> list[str]:
    return ["## Bottleneck", f"- {neck['stage']}: {neck['share_of_wall']:.1%} of the wall time",
            *[f"- {a}" for a in neck["advice"]]]


def _environment(env: dict) -> list[str]:
    sizing = env.get("sizing")
    return [
        "## Environment",
        f"- Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs, {env['workers']} worker(s), {env['scheduler']}",
        *([f"- Sizing: {sizing['tasks_at_once']} task(s) at once ({sizing['tasks_rule']}), "
           f"{sizing['reader_threads']} reader threads ({sizing['reader_threads_rule']})"] if sizing else []),
        "- " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()),
    ]
