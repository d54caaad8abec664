"""Small stores holding a chosen mask, made as a run makes them (``MaskStore.create`` and
``write_block`` per block), for tests of what is derived from a store: measures and exports."""

import numpy as np

from tilepipe.grid import TileGrid
from tilepipe.partition import Plan
from tilepipe.sink import NO_LABEL, MaskStore


def blobs(height: int, width: int, classes: int, seed: int) -> np.ndarray:
    """A mask of smooth regions of ``classes`` labels with a no-data corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    field = sum(np.sin(xx / rng.uniform(5, 30) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(5, 30))
                for _ in range(3))
    mask = np.digitize(field, np.linspace(field.min(), field.max(), classes + 1)[1:-1]).astype(np.uint8)
    mask[: height // 4, : width // 5] = NO_LABEL
    return mask


def write_store(url: str, mask: np.ndarray, attrs: dict, handles: int = 1, chunk: int = 32) -> MaskStore:
    """A store made as a run makes it, its blocks written through ``handles`` successive handles
    (each a run that wrote some blocks, as a run and its resumption do); all-no-data blocks are
    recorded without labels, as the stream records them. The store is marked complete."""
    plan = Plan(*mask.shape[-2:], TileGrid(64, 8, 1), chunk_size=chunk, block_size=2 * chunk,
                depth=None if mask.ndim == 2 else int(np.prod(mask.shape[:-2])),
                volumes=mask.shape[0] if mask.ndim == 4 else None)
    MaskStore.create(url, plan, 4, False, attrs={"class_names": ["a", "b", "c", "d"], **attrs}, run_id="r0")
    blocks = list(plan.blocks())
    for h in range(handles):
        store = MaskStore.open(url, mode="r+", run_id=f"r{h}")
        for block in blocks[h::handles]:
            c = block.core
            plane = mask.reshape(-1, *mask.shape[-2:])[block.plane or 0]
            labels = plane[c.row:c.row_stop, c.col:c.col_stop]
            store.write_block(block, None if (labels == NO_LABEL).all() else labels)
        if h + 1 < handles:
            store.claim(f"r{h + 1}")
    store.mark_complete()
    return store
