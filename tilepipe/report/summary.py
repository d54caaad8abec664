"""The run summary: what ran, what it cost, where the time went; kept in the store and beside it.

Every figure comes from this run's own measurements (or, for multiply-adds, from counting the
network as it ran). :func:`build_summary` only assembles: each key of ``summary.json`` is made by
one function, listed in :data:`KEYS` in the order the file holds them, so where a figure comes
from is one look away. The figures are :mod:`.figures`; the explanations are pure functions of
them: :func:`.advice.bottleneck`, :func:`.tactics.tactics_used` ("How the network stays fast
here") and :func:`.cost.cost_sentences` ("Where the multiply-adds go"); the markdown
report is :func:`.markdown.render_markdown`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..blocks import BlockReport
from ..measures import class_measures
from .cost import cost_figures, cost_sentences
from .origins import settings_origins
from ..labels import NO_LABEL
from ..sink import MaskStore
from .advice import bottleneck
from .figures import (engine_as_run, environment_figures, model_figures, output_figures, plan_figures, rounded,
                      stage_busy, throughput_figures, timing_figures)
from .markdown import render_markdown
from .tactics import tactics_used

KEYS = (
    "tilepipe_summary",  # the format's version
    "created",           # when the summary was built (UTC)
    "status",            # "complete", or "failed" when a block failed
    "run_id",            # the run's id (tilepipe.pipeline.run)
    "warnings",          # _warnings, then the source's own (source.describe())
    "input",             # source.describe() (tilepipe.sources) and the plan's megapixels
    "output",            # figures.output_figures
    "model",             # figures.model_figures
    "cost",              # cost.cost_figures; "sentences": cost.cost_sentences
    "settings",          # origins.settings_origins
    "engine",            # figures.engine_as_run
    "plan",              # figures.plan_figures
    "timing",            # figures.timing_figures
    "environment",       # figures.environment_figures
    "failed_blocks",     # the failed block reports
    "measures",          # measures.class_measures: per class, summed from the blocks' tallies
    "bottleneck",        # advice.bottleneck
    "tactics",           # tactics.tactics_used
    "throughput",        # figures.throughput_figures
)
"""The keys of ``summary.json`` in file order, each with the function that makes it."""


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


def build_summary(prepared, reports: list[BlockReport], store_url: str, setup_seconds: float,
                  blocks_seconds: float, started: float, scheduling, slots: int, reused: int = 0,
                  repaired: int = 0, pyramid: dict | None = None) -> Summary:
    """``slots``: block tasks that could run at once (threads, worker threads, or GPUs);
    ``pyramid``: the levels built after the blocks and their seconds (:mod:`tilepipe.pyramid`).

    The time spent here before the clock stops (describing the source, counting the network's
    multiply-adds, asking the libraries' versions) is the wall time's ``finalize`` part."""
    pyramid = pyramid or {"levels": [], "seconds": 0.0, "built": False}
    finalize_start = time.perf_counter()
    p, model, options = prepared.plan, prepared.model, prepared.options
    failed = [r for r in reports if r.error]
    described = prepared.source.describe()
    cost = cost_figures(model, (p.tile_height, p.tile_width))  # counted once, on the meta device
    engine = engine_as_run(reports, prepared.engine)
    data = {
        "tilepipe_summary": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "failed" if failed else "complete",
        "run_id": prepared.context.run_id,
        "warnings": _warnings(model, failed, reports, p.block_count) + described.get("warnings", []),
        "input": {**described, "megapixels": rounded(p.megapixels, 6)},
        "output": output_figures(p, store_url, options.probabilities, pyramid),
        "model": model_figures(model, cost, prepared.card_file),
        "cost": cost,
        "settings": settings_origins(prepared, described),
        "engine": engine,
        "plan": plan_figures(p, reports, options.blending, reused, repaired),
        "environment": environment_figures(str(engine["device"]), options.workers, slots, scheduling),
        "failed_blocks": [{"index": list(r.index), "core": r.core, "error": r.error} for r in failed],
        "measures": class_measures(MaskStore.open(store_url).group),
    }
    finalize_seconds = time.perf_counter() - finalize_start
    wall = time.perf_counter() - started
    busy = stage_busy(reports)
    sequential = {"setup": setup_seconds, "blocks": blocks_seconds, "pyramid": pyramid["seconds"],
                  "finalize": finalize_seconds}
    data["timing"] = timing_figures(busy, sequential, wall, slots)
    megapixels = sum(p.block(r.index).core.area for r in reports) / 1e6
    data["throughput"] = throughput_figures(megapixels, sum(r.tiles for r in reports), cost["macs_per_tile"],
                                            busy["forward"], wall, engine)
    data["bottleneck"] = bottleneck(data, p, model)
    data["tactics"] = tactics_used(data)
    data["cost"]["sentences"] = cost_sentences(data)
    ordered = {key: data[key] for key in KEYS}
    return Summary(json.loads(json.dumps(ordered, default=_jsonable)))  # plain JSON types, as stored


def _warnings(model, failed: list[BlockReport], reports: list[BlockReport], block_count: int) -> list[str]:
    """What a reader must know before any figure: random weights, failed blocks, an input with no
    valid pixel."""
    warnings = []
    if model.random_weights:
        warnings.append("RANDOM WEIGHTS: this mask is meaningless; it only exercises the pipeline (--weights none).")
    if failed:
        warnings.append(f"{len(failed)} block(s) failed; the store is incomplete (finish it with --resume).")
    if sum(1 for r in reports if r.no_data) == block_count:
        warnings.append(f"ALL NO-DATA: every pixel of the input is no-data (nodata, NaN or Inf); the mask is {NO_LABEL} "
                        "everywhere.")
    return warnings
