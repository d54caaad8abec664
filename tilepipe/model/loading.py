"""From a :class:`ModelSpec` to the model's card (no weights in memory) and to the loaded network.

Weight sources (``--weights``):

* ``default`` (or a member name of the architecture's torchvision weights enum, such as
  ``COCO_WITH_VOC_LABELS_V1``): torchvision's published weights, downloaded once into torch's
  cache (``$TORCH_HOME``). Offline, the error says how to pass a file instead.
* a path: a torchvision state dict, or a DeepLabV3Plus-Pytorch checkpoint for the architectures
  that repository publishes (see :mod:`.checkpoints` for the geometry this implies).
* ``none``: random weights (seed 0), for tests and benchmarks. Every summary says so first.

The number of input channels comes from the checkpoint (its first convolution's weight shape) and
the network is built to match; with random weights it is the number of bands the input gives. A
one-band input feeds a three-channel network by replication; any other mismatch is an error that
names both numbers.

:class:`ModelCard` is what a model is without its weights in memory (geometry, classes, input
channels, normalisation, provenance, size): the client of a distributed run plans, fingerprints
and summarises from it alone; only the workers load the network onto a device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ..errors import TilepipeError, first_line
from ..labels import NO_LABEL
from ..option_grammars import DEFAULT_ARCHITECTURE, DEFAULT_WEIGHTS
from .architectures import Architecture, architecture
from .checkpoints import (
    CLASS_LIMIT,
    DEEPLABV3PLUS,
    checkpoint_output_stride,
    download_state,
    file_identity,
    input_channels_in,
    load_checkpoint,
    num_classes_in,
    published_weights,
    to_torchvision_state,
)
from .costs import count_macs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What to build; hashable so each process loads a given model once."""

    architecture: str = DEFAULT_ARCHITECTURE
    weights: str = DEFAULT_WEIGHTS
    output_stride: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    bands: int | None = None
    """Bands the input gives: the input width of a random-weights network, checked against a checkpoint."""
    file_bands: int | None = field(default=None, compare=False)
    """Bands the file has, selected or not: a checkpoint that takes more is refused saying so (not
    suggesting a ``--bands`` the file cannot satisfy). Only words an error, so not part of the
    cache key."""
    normalise: bool = True
    """Apply ImageNet mean/std after scaling (3-channel models); False when a model card file's
    scaling already maps file values to the network's input."""

    def __post_init__(self) -> None:
        if self.num_classes is not None and not 1 <= self.num_classes < NO_LABEL:
            raise TilepipeError(f"--num-classes {self.num_classes}: {CLASS_LIMIT}")


@dataclass(frozen=True)
class ModelCard:
    """What a model is, without its weights in memory."""

    spec: ModelSpec
    output_stride: int
    num_classes: int
    class_names: tuple[str, ...]
    in_channels: int
    weights_identity: str
    """Human-readable and stable: the torchvision enum name, or file name plus SHA-256 prefix."""
    weights_format: str
    random_weights: bool
    parameters: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def arch(self) -> Architecture:
        return architecture(self.spec.architecture)

    def meta_copy(self, output_stride: int | None = None) -> nn.Module:
        """The same architecture on the meta device (shapes only, no memory, no weights)."""
        with torch.device("meta"):
            return self.arch.make(self.num_classes, output_stride or self.output_stride, self.in_channels)

    def macs_per_tile(self, height: int, width: int, output_stride: int | None = None) -> int:
        """Multiply-adds of one forward pass on a (height, width) tile, as this run executes it
        (no auxiliary head), counted on a meta-device copy (see :func:`.costs.count_macs`)."""
        return count_macs(self.meta_copy(output_stride), height, width, self.in_channels)

    def describe(self) -> dict:
        return {
            "architecture": self.spec.architecture,
            "weights": self.weights_identity,
            "weights_format": self.weights_format,
            "random_weights": self.random_weights,
            "output_stride": self.output_stride,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "in_channels": self.in_channels,
            "parameters": self.parameters,
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
        }


@dataclass
class LoadedModel:
    """A card and its network, weights loaded, in eval mode on the CPU. The card's facts read as
    the model's own (``model.num_classes``, ``model.describe()``)."""

    module: nn.Module
    card: ModelCard

    def __getattr__(self, name: str):
        if name in ("module", "card"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.card, name)


def _class_names(spec: ModelSpec, num_classes: int, published: tuple[str, ...] | None) -> tuple[str, ...]:
    names = spec.class_names or published or tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise TilepipeError(f"{len(names)} class names given for a model with {num_classes} classes")
    return tuple(names)


def _check_bands(spec: ModelSpec, channels: int, identity: str) -> None:
    if spec.bands is None or spec.bands == channels or (spec.bands == 1 and channels == 3):
        return
    if spec.file_bands is not None and spec.file_bands < channels:
        raise TilepipeError(f"the model ({identity}) takes {channels} input channels; the file has {spec.file_bands} "
                            f"band(s)")
    raise TilepipeError(f"the input gives {spec.bands} band(s) but the model ({identity}) takes {channels} "
                        f"input channels; select {channels} bands with --bands")


def _resolve(spec: ModelSpec, download: bool) -> tuple[ModelCard, dict | None]:
    """The card for ``spec`` and the weights' state dict (torchvision key names) when they come
    from a file, or are downloaded (``download``); None for random weights, or for published
    weights when not downloading (their card comes from torchvision's metadata)."""
    arch = architecture(spec.architecture)
    state, published, origin = None, None, spec.weights
    if spec.weights == "none":
        channels = 3 if spec.bands in (None, 1) else spec.bands
        num_classes = spec.num_classes or (len(spec.class_names) if spec.class_names else arch.default_classes)
        identity, fmt, natural_stride = "random (seed 0)", "none", arch.output_strides[0]
    else:
        weights = published_weights(arch, spec.weights)
        if weights is not None:
            published = tuple(weights.meta["categories"])
            fmt, identity, origin = "torchvision", f"torchvision {weights}", weights.url
            num_classes, channels, natural_stride = len(published), 3, arch.output_strides[0]
            state = download_state(weights) if download else None
        else:
            path = Path(os.path.expanduser(spec.weights))
            state, fmt = to_torchvision_state(load_checkpoint(path), path)
            if fmt == DEEPLABV3PLUS and not arch.deeplabv3plus_pytorch:
                raise TilepipeError(f"{path}: a {DEEPLABV3PLUS} checkpoint, but that repository has no {arch.name}")
            identity = file_identity(path)
            natural_stride = checkpoint_output_stride(path, fmt, arch)
            num_classes = num_classes_in(state, arch, path)
            channels = input_channels_in(state, arch, path)
        if spec.num_classes and spec.num_classes != num_classes:
            raise TilepipeError(f"--num-classes {spec.num_classes}, but {origin} holds a {num_classes}-class head")
        _check_bands(spec, channels, identity)
    stride = arch.stride_for(spec.output_stride or natural_stride)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in arch.make(num_classes, stride, channels).parameters())
    imagenet = spec.normalise and channels == 3
    card = ModelCard(spec, stride, num_classes, _class_names(spec, num_classes, published), channels, identity, fmt,
                     spec.weights == "none", parameters,
                     IMAGENET_MEAN if imagenet else (0.0,) * channels, IMAGENET_STD if imagenet else (1.0,) * channels)
    return card, state


def _load_into(module: nn.Module, state: dict, spec: ModelSpec, assign: bool = False) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise TilepipeError(f"{spec.weights}: keys do not match {spec.architecture} "
                            f"({first_line(exc)})") from None


def _network(card: ModelCard, aux: bool) -> nn.Module:
    return card.arch.make(card.num_classes, card.output_stride, card.in_channels, aux=aux)


def model_card(spec: ModelSpec) -> ModelCard:
    """The card for ``spec`` without downloading weights or putting anything on a device: what a
    dry run (``tilepipe plan``) and the client of a distributed run need. A checkpoint file is
    read (weights-only) and its keys and shapes are checked against the network built on the
    meta device, so a bad file is refused before any output exists."""
    card, state = _resolve(spec, download=False)
    if state is not None:
        with torch.device("meta"):
            network = _network(card, aux=any(k.startswith("aux_classifier.") for k in state))
        _load_into(network, state, spec, assign=True)
    return card


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build the network the weights need and load them (eval mode, CPU)."""
    card, state = _resolve(spec, download=True)
    has_aux = state is not None and any(k.startswith("aux_classifier.") for k in state)
    with torch.random.fork_rng():  # random weights are the same in every process
        torch.manual_seed(0)
        module = _network(card, has_aux)
    if state is not None:
        _load_into(module, state, spec)
    if getattr(module, "aux_classifier", None) is not None:
        module.aux_classifier = None  # the auxiliary head only helps training; inference skips it
    return LoadedModel(module.eval(), card)


@lru_cache(maxsize=2)
def cached_model(spec: ModelSpec) -> LoadedModel:
    """One model per process, whatever the number of tasks that use it."""
    return load_model(spec)
