"""The engine's share of the run options, and their defaults: which device, which precision,
how many tiles per forward pass, whether to compile.

A value of its own, apart from :mod:`tilepipe.engine` (which imports torch), so that the option
declaration (:mod:`tilepipe.options`) reads its defaults from here without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .modes import Precision


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """What the engine is told; the run options' defaults for these are the ones declared here."""

    device: str = "auto"
    """``auto`` (CUDA when present), or a device torch names (:func:`tilepipe.option_grammars.check_device`)."""
    precision: Precision = Precision.AUTO
    batch_size: int | str = 4
    """Tiles per forward pass, or ``"auto"``: on CUDA the largest batch that fits in 60% of the
    free device memory (measured with a probe pass per tile shape, capped at 64); 4 on a CPU."""
    compile: bool = False
    """Wrap the network in ``torch.compile``; its warm-up is timed apart from the forward passes."""
