"""Which throughput tactics a run used, and what each did, in that run's own numbers.

:func:`tactics_used` reads only the summary's figures, so a tactic appears exactly when the run
used it (a CPU fp32 run never claims mixed precision, pinned memory or cuDNN autotuning), and every
sentence cites the catalog entry of the tactic and the references that entry rests on.
"""

from __future__ import annotations

from typing import Callable

from .catalog import load_catalog

Rule = Callable[[dict], "str | None"]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _reads(d: dict) -> str:
    p, inp, t = d["plan"], d["input"], d["timing"]
    return (f"{_n(p['blocks_run'] - p['blocks_failed'], 'windowed read')} of block plus halo (largest "
            f"{p['largest_read_megapixels']:.2f} MP) instead of loading the {inp['megapixels']} MP image; "
            f"reading took {t['stage_busy_seconds']['read']:.2f} s of stage work")


def _halo(d: dict) -> str | None:
    p = d["plan"]
    if p["overlap"] == 0 or p["lattice_tiles"] < 2:  # a single tile overlaps nothing
        return None
    how = "blended with a Gaussian window" if p["blending"] == "gaussian" else "cropped to the nearest tile centre"
    return (f"{p['tile'][0]} x {p['tile'][1]} px tiles overlap by {p['overlap']} px and are {how}, so every pixel "
            f"is predicted with context; the cost is an overlap factor of {p['overlap_cost_factor']:.2f} "
            f"({_n(p['tiles_computed'], 'tile')} for {d['input']['megapixels']} MP)")


def _batching(d: dict) -> str | None:
    p, e = d["plan"], d["engine"]
    if p["forward_calls"] == 0 or p["tiles_computed"] <= p["forward_calls"]:
        return None
    return (f"{p['tiles_computed']} tiles ran in {p['forward_calls']} forward passes (batch size {e['batch_size']}, "
            f"{p['tiles_computed'] / p['forward_calls']:.1f} tiles per pass on average), "
            f"{d['model']['macs_per_tile'] / 1e9:.1f} G multiply-adds each")


def _mixed_precision(d: dict) -> str | None:
    e = d["engine"]
    if not e["tactics"].get("mixed_precision"):
        return None
    return (f"convolutions ran under {e['precision']} autocast at "
            f"{d['throughput']['model_tflops_while_running']:.1f} TFLOP/s while the model ran; softmax and "
            "blending stay in float32")


def _channels_last(d: dict) -> str | None:
    if not d["engine"]["tactics"].get("channels_last"):
        return None
    return (f"weights and tiles were in NHWC (channels_last) layout on {d['engine']['device']}, the layout "
            "the convolution kernels prefer")


def _cudnn(d: dict) -> str | None:
    if not d["engine"]["tactics"].get("cudnn_benchmark"):
        return None
    return (f"cuDNN benchmarked its convolution algorithms once for the {d['plan']['tile'][0]} x "
            f"{d['plan']['tile'][1]} tile shape and reused the fastest for all {d['plan']['forward_calls']} passes")


def _pinned(d: dict) -> str | None:
    if not d["engine"]["tactics"].get("pinned_memory"):
        return None
    return (f"each of the {d['plan']['forward_calls']} batches was copied from pinned host memory with "
            "non_blocking=True")


def _overlap_io(d: dict) -> str | None:
    t = d["timing"]
    if t["busy_over_blocks_wall"] <= 1.02:
        return None
    return (f"a reader thread prepared each block's next batches while the network ran, and "
            f"{d['environment']['workers']} block task(s) ran at once, so reading, scaling, blending and writing "
            f"overlapped the forward pass: {t['busy_over_blocks_wall']:.2f} s of stage work per second of wall time")


def _skip(d: dict) -> str | None:
    p = d["plan"]
    if p["tiles_skipped_no_data"] == 0:
        return None
    saved = p["tiles_skipped_no_data"] * d["model"]["macs_per_tile"]
    return (f"{p['blocks_no_data']} blocks and {p['tiles_skipped_no_data']} tiles held no valid pixel and never "
            f"reached the network: {p['compute_saved_by_skipping']:.1%} of the planned compute, "
            f"{saved / 1e12:.2f} T multiply-adds saved")


def _output_stride(d: dict) -> str | None:
    """Only for the ResNet models, where 16 is a choice (the MobileNetV3 models have no other)."""
    if d["plan"]["output_stride"] != 16 or not d["cost"]["backbone"].startswith("ResNet"):
        return None
    aspp = ", ASPP rates 6/12/18" if d["model"]["architecture"].startswith("deeplabv3") else ""
    return (f"output stride 16 (layer3 not dilated{aspp}): "
            f"{d['model']['macs_per_tile'] / 1e9:.1f} G multiply-adds per tile")


def _compile(d: dict) -> str | None:
    e = d["engine"]
    if not e["tactics"].get("compile"):
        return None
    return (f"torch.compile fused the network's kernels; its warm-up took {e['compile_warmup_seconds']:.1f} s, "
            "timed apart from the forward passes")


def _dask(d: dict) -> str | None:
    if d["environment"]["workers"] < 2 or d["plan"]["blocks_run"] < 2:
        return None
    return (f"the plan's {d['plan']['blocks_run']} blocks (chunk rows of {_n(d['plan']['strips'], 'strip')}) ran as "
            f"Dask tasks of whole strips or strip bands, run by "
            f"{d['environment']['workers']} workers ({d['environment']['scheduler']})")


def _chunks(d: dict) -> str:
    p = d["plan"]
    per = -(-p["strip_width"] // p["chunk_size"])
    return (f"each block is one row of (up to) {per} whole {p['chunk_size']} px chunks across a strip, written "
            f"by exactly one task as soon as its tiles are in: {_n(p['chunks_written'], 'chunk')}, no locks and "
            f"no read-modify-write, "
            f"{d['timing']['stage_busy_seconds']['write']:.2f} s of writing")


RULES: tuple[tuple[str, Rule], ...] = (
    ("tactic-lazy-windowed-reads", _reads),
    ("tactic-halo-blending", _halo),
    ("tactic-tile-batching", _batching),
    ("tactic-mixed-precision", _mixed_precision),
    ("tactic-channels-last", _channels_last),
    ("tactic-cudnn-autotune", _cudnn),
    ("tactic-compile", _compile),
    ("tactic-pinned-memory", _pinned),
    ("tactic-overlap-io-compute", _overlap_io),
    ("tactic-skip-nodata", _skip),
    ("tactic-output-stride", _output_stride),
    ("tactic-dask-block-parallelism", _dask),
    ("tactic-chunk-aligned-writes", _chunks),
)


def tactics_used(d: dict) -> list[dict]:
    """``[{"id", "name", "text", "references"}]`` for the tactics this run used."""
    catalog = load_catalog()
    used = []
    for tactic_id, rule in RULES:
        text = rule(d)
        if text:
            entry = catalog[tactic_id]
            used.append({"id": tactic_id, "name": entry.title, "text": text[0].upper() + text[1:] + ".",
                         "references": [tactic_id, *entry.references]})
    return used
