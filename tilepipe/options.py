"""Every run option, declared once: a field of :class:`RunOptions` with an :class:`Option` in its
metadata (help text, how its default reads, the parser that reads and checks a value, its
choices, whether only ``tilepipe run`` has it).

The same option is the keyword ``tile_size`` of ``tilepipe.run``, the key ``tile-size`` (or
``tile_size``) of a config file and the flag ``--tile-size``. The command line's flags
(:func:`tilepipe.cli.option_flag`) and the checks on config files (:mod:`tilepipe.config`) are
made from this declaration, and so is the options table of the documentation (``docs/hooks/
options_table.py``); ``tests/test_options.py`` holds ``configs/satellite.yaml`` and the table to it.

An option that sets a value of the pipeline takes its default from that value (the plan's chunk
and block sizes, the source's level and scaling, the engine's options, the model's names in
:mod:`tilepipe.option_grammars`): the default is declared where it is used, and nothing below
this module borrows it from here (``tests/test_layers.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any

from .engine_options import EngineOptions
from .errors import TilepipeError
from .modes import Blending, OutputStride, Precision
from .option_grammars import DEFAULT_ARCHITECTURE, DEFAULT_WEIGHTS
from .option_values import (BANDS, CLUSTER, DEVICE, MODEL, NAMES, PERCENTILES, SCALING, SELECT, SWITCH, TEXT, WINDOW,
                            Parser, choice, integer, integer_or_auto)
from .partition import Plan
from .sources import SourceSpec
from .sources.scaling import ScalingRequest


class BadValue(TilepipeError):
    """A value an option does not accept: one line naming the option and what it accepts.
    ``detail``: that line as the module that owns the option's grammar wrote it (naming the flag)."""

    def __init__(self, option: Option, value: Any, detail: str | None = None):
        self.option, self.value = option, value
        shown = value if isinstance(value, str) and value.strip() else repr(value)
        self.reason = (detail.removeprefix(option.flag + " ") if detail
                       else f"{shown}: expected {option.parser.accepted}")
        """The line without the option's name: the value and what is wrong with it."""
        super().__init__(self.message(option.flag))

    def message(self, label: str) -> str:
        """The line naming the option as ``label``: its flag, or its key in a file."""
        return f"{label} {self.reason}"

    def in_file(self, path, key: str) -> str:
        """The line for a value written under ``key`` in the file ``path`` (a config file, a card)."""
        return self.message(f"{path}: {key}")


@dataclass(frozen=True)
class Option:
    """How one run option reads, checks and explains itself."""

    help: str
    parser: Parser = TEXT
    default_text: str | None = None
    """How the default reads for users (``--help``, the docs' options table) when it is not the value itself."""
    run_only: bool = False
    """A flag of ``tilepipe run`` only, not of ``tilepipe plan`` (it is about the output)."""
    negatable: bool = True
    """For a switch: ``--x/--no-x`` on the command line; False: a bare ``--x``."""
    name: str = ""
    default: Any = None
    """Filled in from the field: see :data:`OPTIONS`."""

    @property
    def flag(self) -> str:
        return "--" + self.key

    @property
    def key(self) -> str:
        """The option's name in a config file (``tile_size`` is accepted too)."""
        return self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, tuple):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.default)
        return "" if self.default is None else str(self.default)

    def read(self, value):
        try:
            return self.parser.read(value)
        except (TypeError, ValueError):
            raise BadValue(self, value) from None
        except TilepipeError as exc:  # from a grammar's own check
            raise BadValue(self, value, str(exc)) from None


def option(default, help: str, parser: Parser = TEXT, **details) -> Any:
    """A :class:`RunOptions` field declared with its :class:`Option`."""
    return field(default=default, metadata={"option": Option(help, parser, **details)})


def _records_given(cls):
    """Wrap the dataclass's ``__init__`` so that ``given`` records the keywords a caller passes
    (other than None) and every option that differs from its default. ``dataclasses.replace``
    passes every field plus ``given`` itself: a copy keeps the names its original had, plus the
    options the copy changed, instead of counting every field as given."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, **values):
        init(self, **values)
        named = values["given"] if "given" in values else {k for k, v in values.items() if v is not None}
        changed = {name for name, option in OPTIONS.items() if getattr(self, name) != option.default}
        object.__setattr__(self, "given", frozenset(named) | changed)

    cls.__init__ = __init__
    return cls


@_records_given
@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The options of a run. ``None`` means "not given": the default (or the card's, the config
    file's value) stays. Values are read and checked as they are set, so ``RunOptions(bands="3,2,1")``
    holds ``(3, 2, 1)`` and a value an option does not accept raises :class:`BadValue`."""

    # input
    bands: tuple[int, ...] | None = option(
        None, "Bands to use, 1-based, e.g. 3,2,1 or 2,3,4,8: as many as the model takes.", BANDS,
        default_text="card's, else 1,2,3 (or 1)")
    scaling: str = option(
        ScalingRequest.method, "auto (uint8: full range, others: percentiles), dtype, percentile, LOW,HIGH, or card (the model "
        "card's per-band values).", SCALING, default_text="auto (card with a card that has scaling)")
    percentiles: tuple[float, float] = option(
        ScalingRequest.percentiles, "Percentiles for --scaling percentile (computed from overviews or a sample).", PERCENTILES)
    series: str | None = option(None, "DICOM: SeriesInstanceUID to read when the folder holds several series.")
    all_series: bool = option(
        False, "DICOM: run every image series found (a study), each into its own store under -o, then a folder.",
        SWITCH, run_only=True, negatable=False)
    window: str | None = option(None, "DICOM: CENTER,WIDTH or a preset (soft-tissue, lung, bone, brain).",
                                WINDOW, default_text="the file's")
    level: int = option(SourceSpec.level, "Whole-slide DICOM: pyramid level (0 = full resolution).", integer(0))
    select: str | None = option(
        None, "DICOM 4-D series: keep one volume, KEY=VALUE, e.g. AcquisitionNumber=2 or EchoNumbers=1.", SELECT)
    # plan
    tile_size: int = option(512, "Tile side in pixels (a multiple of the output stride).", integer(1))
    overlap: int = option(64, "Overlap between neighbouring tiles in pixels.", integer(0))
    chunk_size: int = option(Plan.chunk_size, "Zarr chunk side in pixels.", integer(1))
    block_size: int = option(Plan.block_size, "Widest strip (a task's columns) in pixels, a multiple of --chunk-size.",
                             integer(1))
    blending: Blending = option(Blending.GAUSSIAN, "How overlapping tiles are merged.", choice(Blending))
    # model
    model: str = option(
        DEFAULT_ARCHITECTURE, "Architecture: deeplabv3_resnet101, deeplabv3_resnet50, "
        "deeplabv3_mobilenet_v3_large, fcn_resnet101, fcn_resnet50, lraspp_mobilenet_v3_large; 'standin' is a "
        "tiny CNN for I/O tests.", MODEL)
    weights: str = option(
        DEFAULT_WEIGHTS, "'default' (torchvision's published weights, downloaded once), a torchvision weights name "
        "(COCO_WITH_VOC_LABELS_V1), a checkpoint path, or 'none' (random).")
    model_card: str | None = option(
        None, "YAML/JSON model card (scaling, classes, colours, stride, tile size, provenance).",
        default_text="beside the checkpoint")
    output_stride: OutputStride | None = option(None, "Network output stride.", choice(OutputStride),
                                                default_text="card's, else the weights'")
    num_classes: int | None = option(None, "Classes of the head (for --weights none; checked against a "
                                     "checkpoint).", integer(1), default_text="from the weights")
    class_names: tuple[str, ...] | None = option(None, "Comma-separated class names.", NAMES,
                                                 default_text="from the weights")
    # engine
    device: str = option(EngineOptions.device, "auto (CUDA when present), cpu, cuda, cuda:N.", DEVICE)
    precision: Precision = option(EngineOptions.precision, "auto: bf16 on CUDA, fp32 on CPU; fp16 needs CUDA.",
                                  choice(Precision))
    batch_size: int | str = option(
        EngineOptions.batch_size, "Tiles per forward pass, or auto (fits the free GPU memory; 4 on a CPU).", integer_or_auto())
    compile: bool = option(EngineOptions.compile, "torch.compile the network (warm-up timed apart).", SWITCH)
    # schedule and output
    workers: int | str = option(
        "auto", "Tasks running at once in this process, or auto (from the CPU count and device).", integer_or_auto())
    cluster: str | None = option(None, "local:N starts a Dask LocalCluster of N worker processes for this run, each "
                                 "pinned to one GPU on a GPU host; local: one per GPU.", CLUSTER)
    scheduler: str | None = option(None, "Address of an existing dask.distributed scheduler, e.g. tcp://host:8786.")
    probabilities: bool = option(False, "Also store per-class probabilities (uint8, p*255).", SWITCH, run_only=True)
    overwrite: bool = option(False, "Replace an existing tilepipe store at OUTPUT.", SWITCH, run_only=True,
                             negatable=False)
    resume: bool = option(False, "Finish an interrupted run: only unfinished blocks run.", SWITCH, run_only=True,
                          negatable=False)

    given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    """The options set explicitly (keywords of the constructor or of :meth:`updated`): they win
    over a config file and a model card even where they equal the default."""

    def __post_init__(self) -> None:
        for name, declared in OPTIONS.items():
            value = getattr(self, name)
            object.__setattr__(self, name, declared.default if value is None else declared.read(value))
        if not self.given <= OPTIONS.keys():
            raise TilepipeError(f"unknown option(s) given: {', '.join(sorted(self.given - OPTIONS.keys()))}")

    def updated(self, **changes) -> RunOptions:
        """A copy with ``changes`` applied and recorded as given; ``None`` values mean "not given"
        and are ignored."""
        unknown = sorted(set(changes) - OPTIONS.keys())
        if unknown:
            raise TilepipeError(f"unknown option(s): {', '.join(unknown)}")
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given, given=self.given | set(given))

    def to_json(self) -> dict:
        """Plain JSON values: enums as their strings (or numbers), tuples as lists."""
        return {name: _plain(getattr(self, name)) for name in OPTIONS}


def _plain(value):
    if isinstance(value, Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


OPTIONS: dict[str, Option] = {
    f.name: replace(f.metadata["option"], name=f.name, default=f.default)
    for f in fields(RunOptions) if "option" in f.metadata
}
"""Every run option's declaration, by name, in the order of :class:`RunOptions`."""
