"""``tilepipe plan --compare``: what each architecture and output stride would cost on this scene.

Every figure is counted at run time on the meta device (no weights, no computation): multiply-adds
per tile, per image pixel (the tiles the plan computes, overlap included, over the image's own
pixels) and parameters. Each architecture's row at its published stride also carries
torchvision's published GFLOPS next to the same count made for the model torchvision published
(520 x 520, 3 channels, its classes and auxiliary head), so the counter can be checked against it.
"""

from __future__ import annotations

import torch

from ..errors import TilepipeError
from ..grid import TileGrid
from ..partition import Plan
from .architectures import NETWORKS, REGISTRY
from .costs import PUBLISHED_SIDE, count_macs, published_check


def compare_architectures(plan: Plan, in_channels: int, num_classes: int) -> list[dict]:
    """One row per (architecture, output stride), in registry order."""
    rows = []
    for name in NETWORKS:
        arch = REGISTRY[name]
        check = published_check(arch)
        for stride in arch.output_strides:
            row = {"architecture": name, "backbone": arch.backbone, "output_stride": stride}
            try:
                grid = TileGrid(plan.grid.tile_size, plan.grid.overlap, stride)
                p = Plan(plan.height, plan.width, grid, plan.chunk_size, plan.block_size, plan.depth)
            except TilepipeError as exc:
                rows.append({**row, "note": str(exc)})
                continue
            with torch.device("meta"):
                module = arch.make(num_classes, stride, in_channels)
            macs = count_macs(module, p.tile_height, p.tile_width, in_channels)
            image_pixels = p.height * p.width * p.planes
            row.update(tile=[p.tile_height, p.tile_width], tiles_computed=p.tiles_computed,
                       gmacs_per_tile=round(macs / 1e9, 3),
                       macs_per_image_pixel=round(macs * p.tiles_computed / image_pixels),
                       parameters=sum(t.numel() for t in module.parameters()))
            if check and stride == arch.output_strides[0]:
                row["published"] = {"side": PUBLISHED_SIDE, "counted_gmacs": round(check[0], 3),
                                    "torchvision_gflops": check[1]}
            rows.append(row)
    return rows
