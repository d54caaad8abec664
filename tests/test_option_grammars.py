"""The option grammars' leaf (:mod:`tilepipe.option_grammars`) against what it stands in for: the
model registry's names, torch's device names, and the values the modules acting on a flag read."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from tilepipe.errors import TilepipeError
from tilepipe.model.architectures import REGISTRY
from tilepipe.option_grammars import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    DEVICE_TYPES,
    check_architecture,
    check_device,
    local_cluster_workers,
    parse_select,
    scaling_method,
    window_values,
)
from tilepipe.options import OPTIONS


def test_the_architecture_names_are_the_registry():
    assert ARCHITECTURES == tuple(REGISTRY)
    assert DEFAULT_ARCHITECTURE in REGISTRY
    for name in REGISTRY:
        check_architecture(name)
    with pytest.raises(TilepipeError, match="--model 'deeplabv4'"):
        check_architecture("deeplabv4")


def test_the_device_types_are_torchs():
    """torch lists the types it accepts in the error for one it does not: that list is the oracle."""
    with pytest.raises(RuntimeError) as refused:
        torch.device("bogus")
    listed = re.search(r"Expected one of (.*?) device type", str(refused.value))[1].split(", ")
    assert sorted(DEVICE_TYPES) == sorted(listed)


def _torch_accepts(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mkldnn is deprecated, not refused
            torch.device(text)
    except RuntimeError:
        return False
    return True


TEXTS = [f"{kind}{index}" for kind in DEVICE_TYPES for index in ("", ":0", ":7")] + [
    "cuda:12", "cuda:2147483647", "cuda:2147483648", "cuda:01", "cuda:-1", "cuda:+1", "cuda:x", "cuda:", "cuda:0:1",
    "cuda:٣", "CUDA", " cuda", "cuda ", "gpu", "tpu9", "cpu,cuda", ":0", ""]


@pytest.mark.parametrize("text", TEXTS)
def test_the_device_grammar_accepts_what_torch_names(text):
    accepted = True
    try:
        check_device(text)
    except TilepipeError as exc:
        accepted = False
        assert str(exc) == f"--device {text!r}: expected auto, cpu, cuda or cuda:N"
    assert accepted == _torch_accepts(text)


def test_auto_is_a_device_for_the_option_only():
    check_device("auto")
    assert not _torch_accepts("auto")


@pytest.mark.parametrize("grammar, text, read", [
    (scaling_method, "auto", ("auto", None)), (scaling_method, " percentile ", ("percentile", None)),
    (scaling_method, "dtype", ("dtype", None)), (scaling_method, "-100,400", ("fixed", (-100.0, 400.0))),
    (scaling_method, "1e3, 2e3", ("fixed", (1000.0, 2000.0))),
    (window_values, "soft-tissue", (40.0, 400.0, "soft-tissue")), (window_values, " 40,400", (40.0, 400.0, "given")),
    (parse_select, "EchoNumbers=1", ("EchoNumbers", "1")),
    (parse_select, " AcquisitionNumber = 2 ", ("AcquisitionNumber", "2")),
    (local_cluster_workers, "local:4", 4), (local_cluster_workers, "local", None),
])
def test_a_grammar_reads_its_text(grammar, text, read):
    assert grammar(text) == read


@pytest.mark.parametrize("option, text, words", [
    ("scaling", "bright", "expected auto, dtype, percentile or two numbers LOW,HIGH"),
    ("scaling", "5,1", "HIGH must be greater than LOW"),
    ("window", "40,0", "WIDTH must be positive"),
    ("window", "liver", "expected CENTER,WIDTH or one of soft-tissue, lung, bone, brain"),
    ("select", "EchoNumbers", "expected KEY=VALUE"),
    ("cluster", "local:0", "expected local:N or local"),
    ("cluster", "remote:2", "expected local:N or local"),
    ("device", "gpu", "expected auto, cpu, cuda or cuda:N"),
    ("model", "unet", "choose one of deeplabv3_resnet101"),
])
def test_an_option_refuses_text_its_grammar_refuses_with_the_grammars_line(option, text, words):
    with pytest.raises(TilepipeError) as refused:
        OPTIONS[option].read(text)
    line = str(refused.value)
    assert line.startswith(f"--{option} {text!r}: ") and words in line, line
