"""Run options: one dataclass, filled from defaults, then a model card, then a YAML file, then
command-line flags (or API keywords).

Every option has the same name in the YAML file (``configs/*.yaml``), the Python API
(``tilepipe.run(..., tile_size=512)``) and the CLI (``--tile-size``); hyphens and underscores are
interchangeable in the file. :func:`resolve_settings` also records where each value came from
(``default``, ``card``, ``config`` or ``flag``), which the run summary reports.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from .errors import TilepipeError, first_line


def _records_given(cls):
    """Wrap the dataclass's ``__init__`` so that the keywords a caller passes (other than None)
    are recorded in ``given``. ``dataclasses.replace`` passes every field plus ``given`` itself,
    so a copy keeps the names its original had instead of counting every field as given."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, **values):
        init(self, **values)
        if "given" not in values:
            object.__setattr__(self, "given", frozenset(k for k, v in values.items() if v is not None))

    cls.__init__ = __init__
    return cls


@_records_given
@dataclass(frozen=True, kw_only=True)
class RunOptions:
    # input
    bands: tuple[int, ...] | None = None
    scaling: str = "auto"
    percentiles: tuple[float, float] = (2.0, 98.0)
    series: str | None = None
    window: str | None = None
    level: int = 0
    select: str | None = None
    # plan
    tile_size: int = 512
    overlap: int = 64
    chunk_size: int = 512
    block_size: int = 8192
    blending: str = "gaussian"
    # model
    model: str = "deeplabv3_resnet101"
    weights: str = "default"
    model_card: str | None = None
    output_stride: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    # engine
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | str = 4
    compile: bool = False
    # schedule and output
    workers: int | str = "auto"
    cluster: str | None = None
    scheduler: str | None = None
    probabilities: bool = False
    overwrite: bool = False
    resume: bool = False
    given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    """The options set explicitly (keywords of the constructor or of :meth:`updated`): they win
    over a config file and a model card even where they equal the default."""

    def updated(self, **changes) -> RunOptions:
        """A copy with ``changes`` applied and recorded as given; ``None`` values mean "not given"
        and are ignored."""
        known = {f.name for f in option_fields()}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TilepipeError(f"unknown option(s): {', '.join(unknown)}")
        given = {k: _coerce(k, v) for k, v in changes.items() if v is not None}
        return replace(self, **given, given=self.given | set(given))

    def to_json(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in option_fields()}


def option_fields() -> tuple:
    """The fields of :class:`RunOptions` that are options (all but ``given``)."""
    return tuple(f for f in fields(RunOptions) if f.name != "given")


def _coerce(name: str, value):
    if name in ("batch_size", "workers") and value != "auto":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TilepipeError(f"option {name}: expected a positive integer or auto, got {value!r}") from None
    if name in ("bands", "percentiles", "class_names"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        try:
            cast = {"bands": int, "percentiles": float, "class_names": str}[name]
            value = tuple(cast(v) for v in value)
        except (TypeError, ValueError):
            raise TilepipeError(f"option {name}: cannot read {value!r} as a comma-separated list") from None
        if name == "percentiles" and (len(value) != 2 or not 0 <= value[0] < value[1] <= 100):
            raise TilepipeError(f"option percentiles: expected LOW,HIGH with 0 <= LOW < HIGH <= 100, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """The resolved options, where each came from, and the model card file they used (if any)."""

    options: RunOptions
    origins: dict = field(default_factory=dict)
    """Option name -> ``default``, ``card``, ``config`` or ``flag``."""
    card_file: object = None
    """The :class:`tilepipe.model.card.CardFile`, or None."""


def resolve_settings(config=None, options: RunOptions | None = None, **overrides) -> Settings:
    """Defaults < model card < the YAML ``config`` file < ``options``/keyword overrides (flags).

    The card is ``model_card`` when given, else a card beside the checkpoint (same stem)."""
    from .model.card import apply_card, find_card, load_card

    from_file = load_options(config)
    flags = (options or RunOptions()).updated(**overrides)
    resolved = from_file.updated(**{k: getattr(flags, k) for k in flags.given})
    origins = ({k: "default" for k in resolved.to_json()} | {k: "config" for k in from_file.given}
               | {k: "flag" for k in flags.given})
    card_path = find_card(resolved.model_card, str(resolved.weights))
    card_file = load_card(card_path) if card_path else None
    resolved, origins = apply_card(resolved, origins, card_file)
    return Settings(resolved, origins, card_file)


def _config_data(path: str | Path | None) -> dict:
    if path is None:
        return {}
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise TilepipeError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise TilepipeError(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise TilepipeError(f"{path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_options(path: str | Path | None, base: RunOptions | None = None) -> RunOptions:
    """Options from a YAML file on top of ``base`` (defaults when omitted)."""
    return _with_file(base or RunOptions(), _config_data(path), path)


def _with_file(options: RunOptions, data: dict, path) -> RunOptions:
    try:
        return options.updated(**data)
    except TilepipeError as exc:
        raise TilepipeError(f"{path}: {exc}") from None
