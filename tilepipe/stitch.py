"""Blending overlapping tile predictions into one block's core.

Only the core is accumulated (the halo is cropped as tiles are added), so a block's memory is
``classes x core`` float32 whatever the tile overlap. Tiles are added in lattice order, so the
floating-point sum at a pixel is the same in whichever block and on whichever worker it runs.

* ``gaussian``: each tile's class probabilities are weighted by the separable Gaussian importance
  map MONAI's ``sliding_window_inference`` and nnU-Net use (centred, sigma = tile/8, float32),
  which fades out the tile borders where a network sees least context.
* ``crop``: each pixel takes the prediction of the covering tile whose centre is nearest
  (Chebyshev distance, ties to the earlier tile): the classic overlap-tile crop, no blending.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .grid import Window
from .sink import NO_LABEL

BLENDING_MODES = ("gaussian", "crop")
SIGMA_SCALE = 0.125


@lru_cache(maxsize=8)
def gaussian_window(height: int, width: int, device: str = "cpu") -> torch.Tensor:
    """MONAI's importance map: ``exp(-x^2 / 2 sigma^2)`` per axis, x from the tile centre."""
    axes = []
    for n in (height, width):
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0
        axes.append(torch.exp(x**2 / (-2.0 * (n * SIGMA_SCALE) ** 2)))
    return (axes[0][:, None] * axes[1][None, :]).to(device)


@lru_cache(maxsize=8)
def centre_distance(height: int, width: int, device: str = "cpu") -> torch.Tensor:
    rows = (torch.arange(height, dtype=torch.float32) - (height - 1) / 2.0).abs()
    cols = (torch.arange(width, dtype=torch.float32) - (width - 1) / 2.0).abs()
    return torch.maximum(rows[:, None], cols[None, :]).to(device)


def first_argmax(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(0)`` as uint8, ties to the lower class. One elementwise pass per class:
    on the CPU this is ~10x faster than a reduction over the outer, strided class axis."""
    best = scores[0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=scores.device)
    for c in range(1, scores.shape[0]):
        better = scores[c] > best
        labels.masked_fill_(better, c)
        torch.maximum(best, scores[c], out=best)
    return labels


class BlockStitcher:
    """Accumulates tile probabilities over a block core and turns them into labels."""

    def __init__(self, core: Window, num_classes: int, mode: str, device: torch.device):
        self.core, self.mode, self.device = core, mode, device
        self.scores = torch.zeros((num_classes, core.height, core.width), dtype=torch.float32, device=device)
        fill = 0.0 if mode == "gaussian" else float("inf")
        self.weights = torch.full((core.height, core.width), fill, dtype=torch.float32, device=device)

    def add(self, tile: Window, probabilities: torch.Tensor) -> None:
        """``probabilities``: (classes, tile.height, tile.width) float32 on the stitcher's device."""
        inside = tile.intersection(self.core)
        if inside is None:
            return
        t_rows, t_cols = inside.relative_to(tile)
        c_rows, c_cols = inside.relative_to(self.core)
        probs = probabilities[:, t_rows, t_cols]
        scores = self.scores[:, c_rows, c_cols]
        weights = self.weights[c_rows, c_cols]
        if self.mode == "gaussian":
            w = gaussian_window(tile.height, tile.width, str(self.device))[t_rows, t_cols]
            scores.addcmul_(probs, w)
            weights.add_(w)
        else:
            d = centre_distance(tile.height, tile.width, str(self.device))[t_rows, t_cols]
            nearer = d < weights
            scores.copy_(torch.where(nearer, probs, scores))
            weights.copy_(torch.where(nearer, d, weights))

    def labels(self, valid: np.ndarray) -> np.ndarray:
        """uint8 class per core pixel, ``NO_LABEL`` where the source has no valid data."""
        labels = first_argmax(self.scores).cpu().numpy()
        labels[~valid] = NO_LABEL
        return labels

    def probabilities(self) -> np.ndarray:
        """Blended class probabilities quantised to uint8 (value / 255), (classes, h, w)."""
        probs = self.scores if self.mode == "crop" else self.scores / self.weights.clamp_min(1e-30)
        probs = torch.nan_to_num(probs, nan=0.0, posinf=0.0)
        return (probs * 255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
