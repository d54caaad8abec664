"""What ``--resume`` checks: the fingerprint of everything that can change a pixel, written into
a store when it is made and matched against the resuming run's before any block is reused; and
that every block recorded as done still has its chunks."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

from .errors import TilepipeError
from .partition import Plan
from .sink import MaskStore
from .sources.identity import content_changes, content_identity
from .store_info import Fingerprint

if TYPE_CHECKING:
    from .preparation import Prepared

log = logging.getLogger("tilepipe")


def fingerprint(prepared: Prepared, engine_kind: dict) -> Fingerprint:
    """What must match for ``--resume`` to reuse a store's finished blocks: everything that can
    change a pixel. The input (identity, size, bands, scaling and geometry), the plan, the model,
    and the engine's resolved precision and device type (``engine_kind``, as the workers resolve
    ``auto``): bf16 and fp32, or a GPU's and a CPU's kernels, give different probabilities. The
    number of workers, the batch size and which GPU ran may change between the two runs.

    ``content`` identifies the input's pixels cheaply (:mod:`tilepipe.sources.identity`): the
    same path, size and type can hold another image."""
    source, p, model = prepared.source, prepared.plan, prepared.model
    described = source.describe()
    geometry = json.dumps(source.geometry(), sort_keys=True, default=str)
    return Fingerprint.from_json(json.loads(json.dumps({
        "input": {k: described.get(k) for k in ("path", "format", "height", "width", "depth", "bands_used", "dtype",
                                                "scaling")},
        "content": content_identity(source),
        "geometry_sha256": hashlib.sha256(geometry.encode()).hexdigest(),
        "plan": {"tile": [p.tile_height, p.tile_width], "overlap": p.grid.overlap, "output_stride": p.grid.output_stride,
                 "chunk_size": p.chunk_size, "block_size": p.block_size, "blending": prepared.options.blending,
                 "probabilities": prepared.options.probabilities},
        "model": {"architecture": model.spec.architecture, "weights": model.weights_identity,
                  "num_classes": model.num_classes},
        "engine": engine_kind,
    }, default=str)))


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} ({a!r} then, {b!r} now)")
    return out


def open_for_resume(output: str, expected: Fingerprint, run_id: str) -> MaskStore:
    """The store at ``output``, claimed for run ``run_id``, if its fingerprint is ``expected``;
    otherwise a one-line error naming the first differences, and the store is left untouched."""
    try:
        store = MaskStore.open(output, mode="r+")
    except TilepipeError:
        raise TilepipeError(f"{output}: nothing to resume (no tilepipe store there); run without --resume") from None
    recorded = (store.info.fingerprint or Fingerprint()).to_json()
    changed, notes = content_changes(recorded.get("content"), expected.content, expected.input["path"])
    changed += _differences({k: v for k, v in recorded.items() if k != "content"},
                            {k: v for k, v in expected.to_json().items() if k != "content"})
    if changed:
        raise TilepipeError(f"{output}: cannot resume, the store was made with a different "
                            f"{'; '.join(changed[:3])}; the store is left untouched")
    for note in notes:
        log.warning(note)
    store.claim(run_id)
    return store


def blocks_to_run(store: MaskStore, plan: Plan) -> tuple[list[tuple[int, ...]], int]:
    """The blocks a resumed run computes, and how many of them are repairs: every block not
    recorded as done, and every block recorded as done whose chunks are not all in the store (a
    write an object store lost, a copy cut short), which would otherwise stay a hole of no-data in
    a store marked complete."""
    done = store.done_blocks()
    lost = set(store.blocks_missing_chunks(plan))
    if lost:
        log.warning("%s: %d finished block(s) lack chunks in the store (a lost write or a copy cut short); "
                    "recomputing them", store.url, len(lost))
    return [b.index for b in plan.blocks() if not done[b.index] or b.index in lost], len(lost)
