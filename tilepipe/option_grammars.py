"""The text forms of the options whose values a module deep in the pipeline acts on: scaling,
window, select, device, cluster and the model's architecture names.

The option declaration (:mod:`tilepipe.options`, through :mod:`tilepipe.option_values`) checks a
flag's text against these when the option is set, and the modules that act on the value (the
sources, the device, the scheduler, the model registry) read the same text with the same
functions. Here they sit in a leaf that imports nothing but :mod:`tilepipe.errors`: checking
``--device`` or ``--model`` loads neither torch nor the modules that use them, and those modules
do not import the options back (they did, closing one circle through every layer).

Each check raises the one :class:`TilepipeError` line that names the flag and what it accepts.
"""

from __future__ import annotations

import re

from .errors import TilepipeError

# --scaling
SCALING_WORDS = ("auto", "dtype", "percentile")
"""The methods named by a word; any other ``--scaling`` is ``LOW,HIGH`` (``card``, the model card's
values, is a choice of the run options and never reaches :func:`scaling_method`)."""


def scaling_method(text: str) -> tuple[str, tuple[float, float] | None]:
    """``(method, fixed)`` of ``--scaling``: a word and None, or ``fixed`` and ``(LOW, HIGH)``."""
    text = str(text).strip()
    if text in SCALING_WORDS:
        return text, None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise TilepipeError(f"--scaling {text!r}: expected auto, dtype, percentile or two numbers LOW,HIGH") from None
    if not high > low:
        raise TilepipeError(f"--scaling {text!r}: HIGH must be greater than LOW")
    return "fixed", (low, high)


# --window
WINDOW_PRESETS = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
"""CT windows in Hounsfield units (center, width), as radiology viewers ship them."""


def window_values(text: str) -> tuple[float, float, str]:
    """``(center, width, source)`` of ``--window``: a preset's (source: its name) or ``CENTER,WIDTH``
    (source: ``given``)."""
    text = str(text).strip()
    if text in WINDOW_PRESETS:
        return (*WINDOW_PRESETS[text], text)
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        raise TilepipeError(f"--window {text!r}: expected CENTER,WIDTH or one of {', '.join(WINDOW_PRESETS)}") from None
    if not width > 0:
        raise TilepipeError(f"--window {text!r}: WIDTH must be positive")
    return center, width, "given"


# --select
def parse_select(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--select``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise TilepipeError(f"--select {text!r}: expected KEY=VALUE, e.g. AcquisitionNumber=2 or EchoNumbers=1")
    return key.strip(), value.strip()


# --device
DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia", "xla",
                "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")
"""The device types ``torch.device`` accepts, each alone or as ``TYPE:N`` (``tests/test_option_grammars.py``
holds this list to the one torch's own error message gives)."""
_DEVICE = re.compile(rf"(?:{'|'.join(DEVICE_TYPES)})(?::(0|[1-9][0-9]*))?")
_DEVICE_INDICES = 2**31
"""torch reads the index as a 32-bit integer."""


def check_device(text: str) -> None:
    """``--device``: ``auto`` or a device torch can name, without asking whether this machine has
    it (a config file written for a GPU machine still reads, and plans, on a laptop)."""
    if text == "auto":
        return
    named = _DEVICE.fullmatch(text)
    if not named or int(named[1] or 0) >= _DEVICE_INDICES:
        raise TilepipeError(f"--device {text!r}: expected auto, cpu, cuda or cuda:N")


# --cluster
def local_cluster_workers(cluster: str) -> int | None:
    """N of ``--cluster local:N``; None for ``local``, one worker per GPU."""
    kind, colon, count = cluster.partition(":")
    if kind != "local" or (colon and (not count.isdigit() or int(count) < 1)):
        raise TilepipeError(f"--cluster {cluster!r}: expected local:N or local (one worker per GPU), e.g. local:4")
    return int(count) if colon else None


# --model and --weights
ARCHITECTURES = ("deeplabv3_resnet101", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "fcn_resnet101",
                 "fcn_resnet50", "lraspp_mobilenet_v3_large", "standin")
"""The names of the model registry (:data:`tilepipe.model.architectures.REGISTRY`), in its order:
``tests/test_option_grammars.py`` holds them equal."""
DEFAULT_ARCHITECTURE = "deeplabv3_resnet101"
DEFAULT_WEIGHTS = "default"
"""torchvision's published weights for the architecture (downloaded once)."""


def check_architecture(name: str) -> None:
    if name not in ARCHITECTURES:
        raise TilepipeError(f"--model {name!r}: choose one of {', '.join(ARCHITECTURES)}")
