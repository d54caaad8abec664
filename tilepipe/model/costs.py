"""Counting what a network costs, on the meta device: no weights, no memory, no computation.

Multiply-adds come from torch's ``FlopCounterMode`` (exact for convolutions and matrix products;
it reports 2 FLOPs per multiply-add). Element-wise work (BatchNorm, ReLU, bilinear upsampling) is
not counted, as in the papers' and torchvision's figures. torchvision publishes a GFLOPS figure
per set of weights (``meta["_ops"]``) for a 520 x 520 input with the auxiliary head its weights
carry: :func:`published_check` counts that same model, so the two can be compared.
"""

from __future__ import annotations

import torch
from torch import nn

PUBLISHED_SIDE = 520
"""The input side torchvision's segmentation GFLOPS are counted at."""


def count_macs(module: nn.Module, height: int, width: int, channels: int = 3) -> int:
    """Multiply-adds of ``module`` on one (channels, height, width) input; it may live on meta."""
    return sum(macs_by_module(module, height, width, channels, ()).values())


def macs_by_module(module: nn.Module, height: int, width: int, channels: int,
                   names: tuple[str, ...]) -> dict[str, int]:
    """Multiply-adds of one forward pass, split over the submodules ``names`` (qualified names)
    plus ``""`` for everything outside them; the values sum to the whole model's count."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(module.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module.eval()(torch.empty(1, channels, height, width, device=device))
    root = type(module).__name__
    counts = counter.get_flop_counts()
    total = sum(counts.get("Global", {}).values()) // 2
    split = {name: sum(counts.get(f"{root}.{name}", {}).values()) // 2 for name in names}
    return {**split, "": total - sum(split.values())}


def macs_by_stage(module: nn.Module, stages: list[tuple[str, tuple[str, ...]]], height: int, width: int,
                  channels: int) -> list[tuple[str, int]]:
    """``[(stage label, multiply-adds)]`` in forward order, plus ``("other", n)`` when some
    multiply-adds fall outside every stage; the figures sum to :func:`count_macs`."""
    names = tuple(name for _, members in stages for name in members)
    by_module = macs_by_module(module, height, width, channels, names)
    out = [(label, sum(by_module[m] for m in members)) for label, members in stages]
    return out + ([("other", by_module[""])] if by_module[""] else [])


def conv_macs_by_kernel(module: nn.Module, height: int, width: int, channels: int,
                        within: str = "backbone") -> dict[str, int]:
    """Multiply-adds of the convolutions under ``within``, by kernel shape ("1x1", "3x3", "7x7"),
    from each convolution's output size and weight shape (forward hooks, meta device). Depthwise
    convolutions are counted under "depthwise"."""
    totals: dict[str, int] = {}

    def hook(conv: nn.Conv2d, _inputs, output) -> None:
        kh, kw = conv.kernel_size
        key = "depthwise" if conv.groups > 1 and conv.groups == conv.in_channels else f"{kh}x{kw}"
        per_output = conv.in_channels // conv.groups * kh * kw
        totals[key] = totals.get(key, 0) + output.numel() * per_output

    root = module.get_submodule(within)
    handles = [m.register_forward_hook(hook) for m in root.modules() if isinstance(m, nn.Conv2d)]
    try:
        device = next(module.parameters()).device
        with torch.inference_mode():
            module.eval()(torch.empty(1, channels, height, width, device=device))
    finally:
        for h in handles:
            h.remove()
    return totals


def published_check(arch) -> tuple[float, float] | None:
    """``(counted, published)`` G multiply-adds at 520 x 520 for the model as torchvision
    publishes its weights (3 channels, their classes, auxiliary head when the weights have one),
    or None when torchvision publishes no figure for this architecture."""
    if arch.weights is None:
        return None
    weights = arch.weights.DEFAULT
    with torch.device("meta"):
        module = arch.make(len(weights.meta["categories"]), aux=arch.published_aux)
    return count_macs(module, PUBLISHED_SIDE, PUBLISHED_SIDE) / 1e9, float(weights.meta["_ops"])
