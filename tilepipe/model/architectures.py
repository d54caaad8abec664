"""The networks tilepipe can run: a registry of builders, one entry per architecture name.

Each :class:`Architecture` says how to build the network at a given output stride, class count and
input-channel count (always with random weights: weights are loaded afterwards), which torchvision
weights enum publishes weights for it, which state-dict key holds the head's last layer (its rows
are the classes), whether DeepLabV3Plus-Pytorch publishes checkpoints of it, and how its modules
group into stages for the cost breakdown. Adding an architecture is adding one entry, and its name
to :data:`tilepipe.option_grammars.ARCHITECTURES` (what ``--model`` accepts without importing
torch; a test holds the two equal); nothing dispatches on names elsewhere.

Geometry: the ResNet-based models are built at output stride 8 (torchvision's choice: layer3 and
layer4 dilated, ASPP rates 12/24/36) or 16 (layer4 dilated only, rates 6/12/18, as
DeepLabV3Plus-Pytorch trains). torchvision's MobileNetV3 backbones are dilated in their last stage
only, so those models run at output stride 16 and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import (
    FCN,
    DeepLabV3,
    DeepLabV3_MobileNet_V3_Large_Weights,
    DeepLabV3_ResNet50_Weights,
    DeepLabV3_ResNet101_Weights,
    FCN_ResNet50_Weights,
    FCN_ResNet101_Weights,
    LRASPP_MobileNet_V3_Large_Weights,
    deeplabv3_mobilenet_v3_large,
    lraspp_mobilenet_v3_large,
)
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from ..errors import TilepipeError
from ..option_grammars import check_architecture

ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
RESNET_DILATION = {8: [False, True, True], 16: [False, False, True]}

Stages = Callable[[nn.Module], list[tuple[str, tuple[str, ...]]]]
"""``stages(module)``: ``[(label, (qualified module names...)), ...]`` in forward order."""


def _resnet_backbone(depth: Callable, output_stride: int, aux: bool) -> IntermediateLayerGetter:
    backbone = depth(weights=None, replace_stride_with_dilation=RESNET_DILATION[output_stride])
    return IntermediateLayerGetter(backbone, {"layer4": "out", **({"layer3": "aux"} if aux else {})})


def _deeplabv3_resnet(depth: Callable) -> Callable[[int, int, bool], nn.Module]:
    def build(num_classes: int, output_stride: int, aux: bool) -> nn.Module:
        return DeepLabV3(_resnet_backbone(depth, output_stride, aux),
                         DeepLabHead(2048, num_classes, atrous_rates=ASPP_RATES[output_stride]),
                         FCNHead(1024, num_classes) if aux else None)
    return build


def _fcn_resnet(depth: Callable) -> Callable[[int, int, bool], nn.Module]:
    def build(num_classes: int, output_stride: int, aux: bool) -> nn.Module:
        return FCN(_resnet_backbone(depth, output_stride, aux), FCNHead(2048, num_classes),
                   FCNHead(1024, num_classes) if aux else None)
    return build


def _deeplabv3_mobilenet(num_classes: int, output_stride: int, aux: bool) -> nn.Module:
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)


def _lraspp_mobilenet(num_classes: int, output_stride: int, aux: bool) -> nn.Module:
    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


def _resnet_stages(module: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    body = module.backbone
    stem = tuple(f"backbone.{n}" for n in ("conv1", "bn1", "relu", "maxpool") if hasattr(body, n))
    layers = [(n, (f"backbone.{n}",)) for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(body, n)]
    return [("stem", stem), *layers, ("head", ("classifier",))]


def _mobilenet_stages(module: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """MobileNetV3's features grouped like torchvision groups them: a new stage at every strided
    block (``_is_cn``), the first block being the stem."""
    blocks = list(module.backbone.named_children())
    starts = [i for i, (_, b) in enumerate(blocks) if getattr(b, "_is_cn", False)]
    bounds = [1, *starts, len(blocks)]
    stages = [("stem", (f"backbone.{blocks[0][0]}",))]
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            label = f"blocks {blocks[a][0]}-{blocks[b - 1][0]}" if b - a > 1 else f"block {blocks[a][0]}"
            stages.append((label, tuple(f"backbone.{name}" for name, _ in blocks[a:b])))
    return [*stages, ("head", ("classifier",))]


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


def _standin(num_classes: int, output_stride: int, aux: bool) -> nn.Module:
    return StandIn(num_classes)


def _standin_stages(module: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    return [("body", ("body",))]


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[int, int, bool], nn.Module]
    """``build(num_classes, output_stride, aux)``: the network with random weights, 3 input channels."""
    output_strides: tuple[int, ...]
    """Supported strides; the first is the one its published weights were trained at."""
    classes_key: str
    """The state-dict key of the head's last weight: its first dimension is the class count."""
    stages: Stages
    weights: type | None = None
    """torchvision's weights enum for this model, or None."""
    deeplabv3plus_pytorch: bool = False
    """DeepLabV3Plus-Pytorch publishes checkpoints of this architecture (head under classifier.classifier)."""
    default_classes: int = 21
    backbone: str = ""
    published_aux: bool = False
    """torchvision's published weights carry an auxiliary head (and its GFLOPS figure counts it)."""
    stride_free: bool = False
    """No downsampling at all (the stand-in): a requested output stride does not apply and is ignored."""

    def stride_for(self, requested: int | None) -> int:
        """The output stride to build: ``requested`` when given and supported, else the native one."""
        if self.stride_free or requested is None:
            return self.output_strides[0]
        if requested not in self.output_strides:
            raise TilepipeError(f"--output-stride {requested}: {self.name} supports "
                                f"{' or '.join(map(str, self.output_strides))}")
        return requested

    def make(self, num_classes: int, output_stride: int | None = None, in_channels: int = 3,
             aux: bool = False) -> nn.Module:
        """Build it; ``in_channels`` other than 3 replaces the first convolution by one of that width."""
        module = self.build(num_classes, self.stride_for(output_stride), aux)
        if in_channels != 3:
            set_input_channels(module, in_channels)
        return module


def first_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """The network's first convolution (the one that sees the input bands), by registration order."""
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            return name, child
    raise TilepipeError(f"{type(module).__name__} has no convolution")


def set_input_channels(module: nn.Module, channels: int) -> None:
    """Replace the first convolution by one with ``channels`` inputs (randomly initialised)."""
    name, conv = first_conv(module)
    parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
    replacement = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                            device=conv.weight.device, dtype=conv.weight.dtype)
    setattr(parent, name.rpartition(".")[2], replacement)


REGISTRY: dict[str, Architecture] = {a.name: a for a in (
    Architecture("deeplabv3_resnet101", _deeplabv3_resnet(resnet101), (8, 16), "classifier.4.weight",
                 _resnet_stages, DeepLabV3_ResNet101_Weights, True, backbone="ResNet-101", published_aux=True),
    Architecture("deeplabv3_resnet50", _deeplabv3_resnet(resnet50), (8, 16), "classifier.4.weight",
                 _resnet_stages, DeepLabV3_ResNet50_Weights, True, backbone="ResNet-50", published_aux=True),
    Architecture("deeplabv3_mobilenet_v3_large", _deeplabv3_mobilenet, (16,), "classifier.4.weight",
                 _mobilenet_stages, DeepLabV3_MobileNet_V3_Large_Weights, backbone="MobileNetV3-Large",
                 published_aux=True),
    Architecture("fcn_resnet101", _fcn_resnet(resnet101), (8, 16), "classifier.4.weight",
                 _resnet_stages, FCN_ResNet101_Weights, backbone="ResNet-101", published_aux=True),
    Architecture("fcn_resnet50", _fcn_resnet(resnet50), (8, 16), "classifier.4.weight",
                 _resnet_stages, FCN_ResNet50_Weights, backbone="ResNet-50", published_aux=True),
    Architecture("lraspp_mobilenet_v3_large", _lraspp_mobilenet, (16,), "classifier.high_classifier.weight",
                 _mobilenet_stages, LRASPP_MobileNet_V3_Large_Weights, backbone="MobileNetV3-Large"),
    Architecture("standin", _standin, (1,), "body.2.weight", _standin_stages, default_classes=4, stride_free=True),
)}
NETWORKS = tuple(name for name in REGISTRY if name != "standin")
"""The real segmentation networks (what ``plan --compare`` compares)."""


def architecture(name: str) -> Architecture:
    check_architecture(name)  # its text form: tilepipe.option_grammars
    return REGISTRY[name]
