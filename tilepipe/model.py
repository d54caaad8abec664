"""Building DeepLabV3-ResNet101 and loading its weights, safely and in the right geometry.

Three weight sources:

* ``default``: torchvision's ``COCO_WITH_VOC_LABELS_V1`` (21 VOC classes), downloaded once into
  torch's cache (``$TORCH_HOME``). Offline, the error says how to pass a file instead.
* a path: a torchvision state dict, or a DeepLabV3Plus-Pytorch checkpoint
  (``{"model_state": ...}``). That repository names the head ``classifier.classifier.*`` and
  trains at output stride 16 (layer3 not dilated, ASPP rates 6/12/18), while torchvision builds
  stride 8 (rates 12/24/36). The keys of both geometries are identical, so loading a stride-16
  checkpoint into a stride-8 network succeeds and silently gives wrong masks: the geometry is
  chosen from the checkpoint's origin (or ``--output-stride``), never from whether keys match.
* ``none``: random weights, for tests and benchmarks. Every summary says so in its first lines.

Checkpoints are read with ``torch.load(weights_only=True)``; the only extra globals allowed are
the numpy scalar types DeepLabV3Plus-Pytorch stores (``best_score``), never arbitrary pickle.

``standin`` is a cheap convolutional model with no global pooling and a small receptive field, used
where a test or benchmark is about I/O, stitching or scheduling rather than about the network.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import DeepLabV3_ResNet101_Weights
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

from .errors import TilepipeError
from .sink import NO_LABEL

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_WEIGHTS = DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
ARCHITECTURES = ("deeplabv3_resnet101", "standin")
CLASS_LIMIT = f"a mask holds 1 to {NO_LABEL - 1} classes, because label {NO_LABEL} is its no-data value"
"""Why a head with 255 classes or more is refused: its last class would read as no-data."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build; hashable so each process loads a given model once."""

    architecture: str = "deeplabv3_resnet101"
    weights: str = "default"
    output_stride: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and not 1 <= self.num_classes < NO_LABEL:
            raise TilepipeError(f"--num-classes {self.num_classes}: {CLASS_LIMIT}")


@dataclass(frozen=True)
class ModelCard:
    """What a model is, without its weights in memory: geometry, classes, provenance, size.

    The client of a distributed run plans, fingerprints and summarises from the card alone; only
    the workers load the network onto a device."""

    spec: ModelSpec
    output_stride: int
    num_classes: int
    class_names: tuple[str, ...]
    weights_identity: str
    """Human-readable and stable: the torchvision enum name, or file name plus SHA-256 prefix."""
    weights_format: str
    random_weights: bool
    parameters: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def meta_copy(self, output_stride: int | None = None) -> nn.Module:
        """The same architecture on the meta device (shapes only, no memory, no weights)."""
        with torch.device("meta"):
            if self.spec.architecture == "standin":
                return StandIn(self.num_classes)
            return build_deeplabv3_resnet101(self.num_classes, output_stride or self.output_stride)

    def macs_per_tile(self, height: int, width: int, output_stride: int | None = None) -> int:
        """Multiply-adds of one forward pass on a (height, width) tile, as this run executes it
        (no auxiliary head). Counted with torch's FlopCounterMode on a meta-device copy: exact
        for convolutions and matrix products, and it costs no computation."""
        return count_macs(self.meta_copy(output_stride), height, width)

    def describe(self) -> dict:
        return {
            "architecture": self.spec.architecture,
            "weights": self.weights_identity,
            "weights_format": self.weights_format,
            "random_weights": self.random_weights,
            "output_stride": self.output_stride,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
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


def count_macs(module: nn.Module, height: int, width: int) -> int:
    """Multiply-adds of ``module`` on one (3, height, width) input; ``module`` may live on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(module.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module.eval()(torch.empty(1, 3, height, width, device=device))
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-add


def build_deeplabv3_resnet101(num_classes: int, output_stride: int = 8, aux: bool = False) -> DeepLabV3:
    """torchvision's DeepLabV3-ResNet101 at output stride 8 or 16 (randomly initialised)."""
    if output_stride not in ASPP_RATES:
        raise TilepipeError(f"--output-stride {output_stride}: DeepLabV3 supports 8 or 16")
    dilate = [False, True, True] if output_stride == 8 else [False, False, True]
    backbone = resnet101(weights=None, replace_stride_with_dilation=dilate)
    layers = {"layer4": "out", **({"layer3": "aux"} if aux else {})}
    return DeepLabV3(
        IntermediateLayerGetter(backbone, return_layers=layers),
        DeepLabHead(2048, num_classes, atrous_rates=ASPP_RATES[output_stride]),
        FCNHead(1024, num_classes) if aux else None,
    )


class StandIn(nn.Module):
    """A cheap segmenter: two 3x3 convolutions, no pooling, receptive field 5x5 px.

    Its output for a pixel depends only on the pixels within 2 px, so a tiled run can reproduce a
    whole-image run exactly wherever a tile's halo covers that radius. About 1 kFLOP per pixel:
    cheap enough that benchmarks with it measure the pipeline, not the network."""

    receptive_radius = 2

    def __init__(self, num_classes: int = 4, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint without executing pickle code; only numpy scalars are allowed extra."""
    np_core = getattr(np, "_core", None) or np.core
    allowed = [np_core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)}]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TilepipeError(f"{path}: no such checkpoint file") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TilepipeError(f"{path}: not a loadable weights-only PyTorch checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise TilepipeError(f"{path}: expected a state dict or a dict with 'model_state', found {type(obj).__name__}")
    return obj


def to_torchvision_state(ckpt: dict, path: Path) -> tuple[dict, str]:
    """Normalise a checkpoint to torchvision key names; returns (state_dict, format name)."""
    if "model_state" in ckpt:
        state = {re.sub(r"^classifier\.classifier\.", "classifier.", k): v for k, v in ckpt["model_state"].items()}
        return {k.removeprefix("module."): v for k, v in state.items()}, "DeepLabV3Plus-Pytorch"
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        ckpt = ckpt["state_dict"]
    if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise TilepipeError(f"{path}: does not look like a state dict (no 'model_state', values are not all tensors)")
    return {k.removeprefix("module."): v for k, v in ckpt.items()}, "torchvision"


def checkpoint_output_stride(path: Path, fmt: str) -> int:
    """The stride a checkpoint was trained at: DeepLabV3Plus-Pytorch names it (``..._os8.pth``)
    and defaults to 16; torchvision-format weights are stride 8."""
    if fmt == "DeepLabV3Plus-Pytorch":
        match = re.search(r"os(8|16)", path.name)
        return int(match.group(1)) if match else 16
    return 8


def _num_classes_in(state: dict, path) -> int:
    weight = state.get("classifier.4.weight")
    if weight is None:
        raise TilepipeError(f"{path}: no 'classifier.4.weight' key; this is not a DeepLabV3 checkpoint")
    classes = int(weight.shape[0])
    if classes >= NO_LABEL:
        raise TilepipeError(f"{path}: holds a {classes}-class head; {CLASS_LIMIT}")
    return classes


def _file_identity(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name} (sha256 {digest.hexdigest()[:12]})"


def _class_names(spec: ModelSpec, num_classes: int, published: tuple[str, ...] | None) -> tuple[str, ...]:
    names = spec.class_names or published or tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise TilepipeError(f"{len(names)} class names given for a model with {num_classes} classes")
    return tuple(names)


def _download_default_state() -> dict:
    try:
        return DEFAULT_WEIGHTS.get_state_dict(progress=False, check_hash=True)
    except (URLError, OSError, RuntimeError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(DEFAULT_WEIGHTS.url).name
        raise TilepipeError(
            f"could not download the default weights {DEFAULT_WEIGHTS.url} ({type(exc).__name__}: "
            f"{str(exc).strip()[:120]}); copy that file to {cache}, or pass a local checkpoint with --weights PATH"
        ) from None


def _resolve(spec: ModelSpec, download: bool) -> tuple[ModelCard, dict | None]:
    """The card for ``spec`` and the weights' state dict (torchvision key names) when they come
    from a file, or are downloaded (``download``); None for random weights, or for the default
    weights when not downloading (their card comes from torchvision's metadata)."""
    if spec.architecture not in ARCHITECTURES:
        raise TilepipeError(f"--model {spec.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    standin = spec.architecture == "standin"
    state, published, random = None, None, spec.weights == "none"
    if random:
        fmt, identity, stride = "none", "random (seed 0)", spec.output_stride or 8
        num_classes = spec.num_classes or (4 if standin else len(DEFAULT_WEIGHTS.meta["categories"]))
    elif standin:
        path = Path(os.path.expanduser(spec.weights))
        state, fmt, identity, num_classes = load_checkpoint(path), "standin", _file_identity(path), spec.num_classes or 4
    elif spec.weights == "default":
        fmt, identity, stride = "torchvision", f"torchvision {DEFAULT_WEIGHTS}", spec.output_stride or 8
        published = tuple(DEFAULT_WEIGHTS.meta["categories"])
        state = _download_default_state() if download else None
        num_classes = _num_classes_in(state, DEFAULT_WEIGHTS.url) if state is not None else len(published)
    else:
        path = Path(os.path.expanduser(spec.weights))
        state, fmt = to_torchvision_state(load_checkpoint(path), path)
        identity, stride = _file_identity(path), spec.output_stride or checkpoint_output_stride(path, fmt)
        num_classes = _num_classes_in(state, path)
    if standin:
        fmt, stride = "standin", 1
    elif spec.num_classes and spec.num_classes != num_classes:
        raise TilepipeError(f"--num-classes {spec.num_classes}, but {spec.weights} holds a {num_classes}-class head")
    with torch.device("meta"):
        network = StandIn(num_classes) if standin else build_deeplabv3_resnet101(num_classes, stride)
    card = ModelCard(spec, stride, num_classes, _class_names(spec, num_classes, published), identity, fmt, random,
                     sum(p.numel() for p in network.parameters()))
    return card, state


def model_card(spec: ModelSpec) -> ModelCard:
    """The card for ``spec`` without downloading weights or putting anything on a device: what a
    dry run (``tilepipe plan``) and the client of a distributed run need. A checkpoint file is
    read (weights-only) and its keys and shapes are checked against the network built on the
    meta device, so a bad file is refused before any output exists."""
    card, state = _resolve(spec, download=False)
    if state is not None:
        _load_into(card.meta_copy(), {k: v for k, v in state.items() if not k.startswith("aux_classifier.")},
                   spec, assign=True)
    return card


def _load_into(module: nn.Module, state: dict, spec: ModelSpec, assign: bool = False) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        what = "not a stand-in checkpoint" if spec.architecture == "standin" else "keys do not match DeepLabV3-ResNet101"
        raise TilepipeError(f"{spec.weights}: {what} ({str(exc).splitlines()[0]})") from None


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build the network the weights need and load them (eval mode, CPU)."""
    card, state = _resolve(spec, download=True)
    standin = spec.architecture == "standin"
    if state is None:  # random weights, the same in every process
        with torch.random.fork_rng():
            torch.manual_seed(0)
            module = StandIn(card.num_classes) if standin else build_deeplabv3_resnet101(card.num_classes,
                                                                                          card.output_stride)
    else:
        has_aux = any(k.startswith("aux_classifier.") for k in state)
        module = StandIn(card.num_classes) if standin else build_deeplabv3_resnet101(
            card.num_classes, card.output_stride, aux=has_aux)
        _load_into(module, state, spec)
        if not standin:
            module.aux_classifier = None  # the auxiliary head only helps training; inference skips it
    return LoadedModel(module.eval(), card)


@lru_cache(maxsize=2)
def cached_model(spec: ModelSpec) -> LoadedModel:
    """One model per process, whatever the number of tasks that use it."""
    return load_model(spec)
