"""The network: which architectures exist, how weights load, what a model card says, what it costs.

* :mod:`.architectures`: the registry of builders (one entry per ``--model`` name);
* :mod:`.checkpoints`: safe checkpoint reading, DeepLabV3Plus-Pytorch conversion, torchvision's
  published weights;
* :mod:`.card`: the model card file a user writes (scaling, classes and colours, stride, tile size,
  provenance);
* :mod:`.costs`: multiply-adds counted on the meta device, per stage and per kernel shape;
* :mod:`.loading`: :class:`ModelSpec` -> :class:`ModelCard` (what the model is, no weights in
  memory) and :class:`LoadedModel` (the network, once per process).
"""

from .architectures import NETWORKS, REGISTRY, Architecture, StandIn, architecture
from .card import CardFile, find_card, load_card
from .costs import count_macs, macs_by_stage
from .loading import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, ModelCard, ModelSpec, cached_model, load_model, model_card

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "NETWORKS", "REGISTRY", "Architecture", "CardFile", "LoadedModel", "ModelCard",
    "ModelSpec", "StandIn", "architecture", "cached_model", "count_macs", "find_card", "load_card",
    "load_model", "macs_by_stage", "model_card",
]
