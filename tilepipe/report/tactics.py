"""Which throughput tactics a run used, and what each did, in that run's own numbers.

:func:`tactics_used` reads only the summary's figures, so a tactic appears exactly when the run
used it (a CPU fp32 run never claims mixed precision, pinned memory or cuDNN autotuning), and every
sentence cites the catalog entry of the tactic and the references that entry rests on.

:data:`TACTICS` is the whole rule book, one row per catalog entry: when the figures show the
tactic was used, and the sentence that says what it did. The sentences below assume their row's
condition holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .catalog import load_catalog


@dataclass(frozen=True)
class Tactic:
    id: str
    """The tactic's catalog entry (its title is the tactic's name, its references are cited)."""
    used: Callable[[dict], bool]
    """Whether the summary's figures show the run used it."""
    says: Callable[[dict], str]
    """What it did in this run, in the run's figures (a sentence without its full stop)."""


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 tile``, ``3 tiles``; ``plural`` where adding an s is wrong (``passes``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _reads(d: dict) -> str:
    p, inp, t = d["plan"], d["input"], d["timing"]
    return (f"{counted(p['blocks_run'] - p['blocks_failed'], 'windowed read')} of block plus halo (largest "
            f"{p['largest_read_megapixels']:.2f} MP) instead of loading the {inp['megapixels']} MP image; "
            f"reading took {t['stage_busy_seconds']['read']:.2f} s of stage work")


def _halo(d: dict) -> str:
    p = d["plan"]
    how = "blended with a Gaussian window" if p["blending"] == "gaussian" else "cropped to the nearest tile centre"
    return (f"{p['tile'][0]} x {p['tile'][1]} px tiles overlap by {p['overlap']} px and are {how}, so every pixel "
            f"is predicted with context; the cost is an overlap factor of {p['overlap_cost_factor']:.2f} "
            f"({counted(p['tiles_computed'], 'tile')} for {d['input']['megapixels']} MP)")


def _batching(d: dict) -> str:
    p, e = d["plan"], d["engine"]
    return (f"{p['tiles_computed']} tiles ran in {p['forward_calls']} forward passes (batch size {e['batch_size']}, "
            f"{p['tiles_computed'] / p['forward_calls']:.1f} tiles per pass on average), "
            f"{d['model']['macs_per_tile'] / 1e9:.1f} G multiply-adds each")


def _mixed_precision(d: dict) -> str:
    e = d["engine"]
    return (f"convolutions ran under {e['precision']} autocast at "
            f"{d['throughput']['model_tflops_while_running']:.1f} TFLOP/s while the model ran; softmax and "
            "blending stay in float32")


def _channels_last(d: dict) -> str:
    return (f"weights and tiles were in NHWC (channels_last) layout on {d['engine']['device']}, the layout "
            "the convolution kernels prefer")


def _cudnn(d: dict) -> str:
    return (f"cuDNN benchmarked its convolution algorithms once for the {d['plan']['tile'][0]} x "
            f"{d['plan']['tile'][1]} tile shape and reused the fastest for all {d['plan']['forward_calls']} passes")


def _pinned(d: dict) -> str:
    return (f"each of the {d['plan']['forward_calls']} batches was copied from pinned host memory with "
            "non_blocking=True")


def _overlap_io(d: dict) -> str:
    t = d["timing"]
    return (f"a reader thread prepared each block's next batches while the network ran, and "
            f"{d['environment']['workers']} block task(s) ran at once, so reading, scaling, blending and writing "
            f"overlapped the forward pass: {t['busy_over_blocks_wall']:.2f} s of stage work per second of wall time")


def _skip(d: dict) -> str:
    p = d["plan"]
    saved = p["tiles_skipped_no_data"] * d["model"]["macs_per_tile"]
    return (f"{p['blocks_no_data']} blocks and {p['tiles_skipped_no_data']} tiles held no valid pixel and never "
            f"reached the network: {p['compute_saved_by_skipping']:.1%} of the planned compute, "
            f"{saved / 1e12:.2f} T multiply-adds saved")


def _output_stride(d: dict) -> str:
    aspp = ", ASPP rates 6/12/18" if d["model"]["architecture"].startswith("deeplabv3") else ""
    return (f"output stride 16 (layer3 not dilated{aspp}): "
            f"{d['model']['macs_per_tile'] / 1e9:.1f} G multiply-adds per tile")


def _compile(d: dict) -> str:
    e = d["engine"]
    return (f"torch.compile fused the network's kernels; its warm-up took {e['compile_warmup_seconds']:.1f} s, "
            "timed apart from the forward passes")


def _dask(d: dict) -> str:
    return (f"the plan's {d['plan']['blocks_run']} blocks (chunk rows of {counted(d['plan']['strips'], 'strip')}) ran as "
            f"Dask tasks of whole strips or strip bands, run by "
            f"{d['environment']['workers']} workers ({d['environment']['scheduler']})")


def _chunks(d: dict) -> str:
    p = d["plan"]
    per = -(-p["strip_width"] // p["chunk_size"])
    return (f"each block is one row of (up to) {per} whole {p['chunk_size']} px chunks across a strip, written "
            f"by exactly one task as soon as its tiles are in: {counted(p['chunks_written'], 'chunk')}, no locks and "
            f"no read-modify-write, "
            f"{d['timing']['stage_busy_seconds']['write']:.2f} s of writing")


def _always(d: dict) -> bool:
    """Every run reads windows and writes whole chunks."""
    return True


def _engine(flag: str) -> Callable[[dict], bool]:
    """The engine reports the tactic switched on (``Engine.describe()["tactics"]``, merged over the
    workers by :func:`.figures.engine_as_run`)."""
    return lambda d: bool(d["engine"]["tactics"].get(flag))


def _tiles_overlap(d: dict) -> bool:
    """Tiles overlap, and there is more than one of them (a single tile overlaps nothing)."""
    return d["plan"]["overlap"] != 0 and d["plan"]["lattice_tiles"] >= 2


def _tiles_batched(d: dict) -> bool:
    return 0 < d["plan"]["forward_calls"] < d["plan"]["tiles_computed"]


def _stages_overlapped(d: dict) -> bool:
    return d["timing"]["busy_over_blocks_wall"] > 1.02


def _tiles_skipped(d: dict) -> bool:
    return d["plan"]["tiles_skipped_no_data"] != 0


def _stride_16_chosen(d: dict) -> bool:
    """Only for the ResNet models, where 16 is a choice (the MobileNetV3 models have no other)."""
    return d["plan"]["output_stride"] == 16 and d["cost"]["backbone"].startswith("ResNet")


def _blocks_in_parallel(d: dict) -> bool:
    return d["environment"]["workers"] >= 2 and d["plan"]["blocks_run"] >= 2


TACTICS: tuple[Tactic, ...] = (
    Tactic("tactic-lazy-windowed-reads", _always, _reads),
    Tactic("tactic-halo-blending", _tiles_overlap, _halo),
    Tactic("tactic-tile-batching", _tiles_batched, _batching),
    Tactic("tactic-mixed-precision", _engine("mixed_precision"), _mixed_precision),
    Tactic("tactic-channels-last", _engine("channels_last"), _channels_last),
    Tactic("tactic-cudnn-autotune", _engine("cudnn_benchmark"), _cudnn),
    Tactic("tactic-compile", _engine("compile"), _compile),
    Tactic("tactic-pinned-memory", _engine("pinned_memory"), _pinned),
    Tactic("tactic-overlap-io-compute", _stages_overlapped, _overlap_io),
    Tactic("tactic-skip-nodata", _tiles_skipped, _skip),
    Tactic("tactic-output-stride", _stride_16_chosen, _output_stride),
    Tactic("tactic-dask-block-parallelism", _blocks_in_parallel, _dask),
    Tactic("tactic-chunk-aligned-writes", _always, _chunks),
)
"""The tactics in the order the summary lists them."""


def tactics_used(d: dict) -> list[dict]:
    """``[{"id", "name", "text", "references"}]`` for the tactics this run used."""
    catalog = load_catalog()
    used = []
    for tactic in TACTICS:
        if tactic.used(d):
            text, entry = tactic.says(d), catalog[tactic.id]
            used.append({"id": tactic.id, "name": entry.title, "text": text[0].upper() + text[1:] + ".",
                         "references": [tactic.id, *entry.references]})
    return used
