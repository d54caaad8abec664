"""Reading weights: local checkpoints (safely) and torchvision's published weights.

Checkpoints are read with ``torch.load(weights_only=True)``; the only extra globals allowed are
the numpy scalar types DeepLabV3Plus-Pytorch stores (``best_score``), never arbitrary pickle.

A DeepLabV3Plus-Pytorch checkpoint (``{"model_state": ...}``) names the head
``classifier.classifier.*`` and is trained at output stride 16 unless its file name says ``os8``;
torchvision-format weights are stride 8 for the ResNet models. The keys of both geometries are
identical, so loading a stride-16 checkpoint into a stride-8 network succeeds and silently gives
wrong masks: the geometry comes from the checkpoint's origin (or ``--output-stride``), never from
whether keys match.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from ..errors import TilepipeError, first_line
from ..labels import NO_LABEL
from .architectures import Architecture, first_conv

DEEPLABV3PLUS = "DeepLabV3Plus-Pytorch"
CLASS_LIMIT = f"a mask holds 1 to {NO_LABEL - 1} classes, because label {NO_LABEL} is its no-data value"
"""Why a head with 255 classes or more is refused: its last class would read as no-data."""


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint without executing pickle code; only numpy scalars are allowed extra."""
    np_core = getattr(np, "_core", None) or np.core
    allowed = [np_core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)}]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            # torch notes a pickle protocol other than 2 as possibly unsupported; a file it cannot
            # read gets our one-line error, a file it can read needs no notice
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TilepipeError(f"{path}: no such checkpoint file") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise TilepipeError(f"{path}: not a loadable weights-only PyTorch checkpoint ({first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise TilepipeError(f"{path}: expected a state dict or a dict with 'model_state', found {type(obj).__name__}")
    return obj


def to_torchvision_state(ckpt: dict, path: Path) -> tuple[dict, str]:
    """Normalise a checkpoint to torchvision key names; returns (state_dict, format name)."""
    if "model_state" in ckpt:
        state = {re.sub(r"^classifier\.classifier\.", "classifier.", k): v for k, v in ckpt["model_state"].items()}
        return {k.removeprefix("module."): v for k, v in state.items()}, DEEPLABV3PLUS
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict):
        ckpt = ckpt["state_dict"]
    if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise TilepipeError(f"{path}: does not look like a state dict (no 'model_state', values are not all tensors)")
    return {k.removeprefix("module."): v for k, v in ckpt.items()}, "torchvision"


def checkpoint_output_stride(path: Path, fmt: str, arch: Architecture) -> int:
    """The stride a checkpoint was trained at: DeepLabV3Plus-Pytorch names it (``..._os8.pth``)
    and defaults to 16; torchvision-format weights use the architecture's own stride."""
    if fmt == DEEPLABV3PLUS:
        match = re.search(r"os(8|16)", path.name)
        return int(match.group(1)) if match else 16
    return arch.output_strides[0]


def num_classes_in(state: dict, arch: Architecture, origin) -> int:
    weight = state.get(arch.classes_key)
    if weight is None:
        raise TilepipeError(f"{origin}: no {arch.classes_key!r} key; this is not a {arch.name} checkpoint")
    classes = int(weight.shape[0])
    if classes >= NO_LABEL:
        raise TilepipeError(f"{origin}: holds a {classes}-class head; {CLASS_LIMIT}")
    return classes


def input_channels_in(state: dict, arch: Architecture, origin) -> int:
    """The input channels the checkpoint was trained on: the first convolution's weight shape
    (out, in, kh, kw), found under the key that convolution has in ``arch``'s module tree."""
    with torch.device("meta"):
        name, _ = first_conv(arch.make(arch.default_classes))
    weight = state.get(f"{name}.weight")
    if weight is None or weight.ndim != 4:
        raise TilepipeError(f"{origin}: no 4-D {name}.weight (the first convolution of {arch.name}); "
                            f"this is not a {arch.name} checkpoint")
    return int(weight.shape[1])


def file_identity(path: Path) -> str:
    """File name plus a SHA-256 prefix: stable across copies, different for different weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name} (sha256 {digest.hexdigest()[:12]})"


def published_weights(arch: Architecture, name: str):
    """torchvision's weights enum member for ``name`` ('default', 'DEFAULT', a member name such as
    'COCO_WITH_VOC_LABELS_V1', or 'Enum.MEMBER'), or None when ``name`` is not one (a path)."""
    if arch.weights is None:
        return None
    member = name.rpartition(".")[2] if name.startswith(arch.weights.__name__ + ".") else name
    if member in ("default", "DEFAULT"):
        return arch.weights.DEFAULT
    return arch.weights.__members__.get(member)


def download_state(weights) -> dict:
    """The published state dict (cached in torch's hub folder after the first download)."""
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (URLError, OSError, RuntimeError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise TilepipeError(
            f"could not download the weights {weights} from {weights.url} ({type(exc).__name__}: "
            f"{str(exc).strip()[:120]}); copy that file to {cache}, or pass a local checkpoint with --weights PATH"
        ) from None
