"""How a run option's value is read and checked: the :class:`Parser` each option of
:mod:`tilepipe.options` declares. A parser takes a flag's text, a config file's YAML value or an
API keyword's Python value, gives the option's value, and says in words what it accepts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .option_grammars import (
    check_architecture,
    check_device,
    local_cluster_workers,
    parse_select,
    scaling_method,
    window_values,
)


@dataclass(frozen=True)
class Parser:
    """Reads an option's value from a flag's text, a config file's value or an API keyword.
    Reading a value it made gives the same value back (a copy of the options reads them again)."""

    read: Callable[[Any], Any]
    """Raises ValueError or TypeError for a value it does not accept."""
    accepted: str
    """What it accepts, for error messages."""
    metavar: str = "TEXT"
    choices: tuple[str, ...] = ()
    switch: bool = False
    """A yes/no option: a flag without a value on the command line."""


def _text(value) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(value)
    return str(value)


def _integer(value) -> int:
    if isinstance(value, (bool, float)):
        raise TypeError(value)
    return int(value)


def _number(value) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    return float(value)


def _switch(value) -> bool:
    if isinstance(value, bool) or getattr(value, "dtype", None) == bool:  # numpy's bool_ too
        return bool(value)
    raise TypeError(value)


def integer(minimum: int) -> Parser:
    def read(value) -> int:
        number = _integer(value)
        if number < minimum:
            raise ValueError(value)
        return number
    return Parser(read, "a positive integer" if minimum == 1 else f"an integer >= {minimum}", "INTEGER")


def integer_or_auto() -> Parser:
    positive = integer(1).read
    return Parser(lambda value: "auto" if value == "auto" else positive(value), "a positive integer or auto",
                  "N|auto")


def choice(modes: type[Enum]) -> Parser:
    convert = _integer if issubclass(modes, int) else _text
    names = tuple(str(mode.value) for mode in modes)
    return Parser(lambda value: modes(convert(value)), f"one of {', '.join(names)}", choices=names)


def listed(item: Callable, accepted: str, metavar: str, check: Callable[[tuple], bool] = bool) -> Parser:
    """A comma-separated list in a flag, a YAML list in a config file, any sequence in Python (a
    tuple, a list, a range, a 1-D numpy array)."""
    def read(value) -> tuple:
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple, range)) or getattr(value, "ndim", None) == 1:
            items = list(value)
        else:
            raise TypeError(value)
        values = tuple(item(v) for v in items)
        if not check(values):
            raise ValueError(value)
        return values
    return Parser(read, accepted, metavar)


def grammar(check: Callable[[str], object], accepted: str) -> Parser:
    """Text in a grammar of :mod:`tilepipe.option_grammars`, shared with the module acting on it:
    ``check`` raises its :class:`TilepipeError` (naming the flag and what it accepts) for text it
    does not accept."""
    def read(value) -> str:
        text = _text(value)
        check(text)
        return text
    return Parser(read, accepted)


def _scaling(text: str) -> None:
    if text != "card":  # the card's values: checked against the card when the source opens
        scaling_method(text)


TEXT = Parser(_text, "text")
SWITCH = Parser(_switch, "true or false", switch=True)
BANDS = listed(_integer, "a list of 1-based band numbers, e.g. 3,2,1", "LIST")  # their range is the file's
PERCENTILES = listed(_number, "LOW,HIGH with 0 <= LOW < HIGH <= 100", "LOW,HIGH",
                     lambda v: len(v) == 2 and 0 <= v[0] < v[1] <= 100)
NAMES = listed(_text, "a list of class names, e.g. background,water,forest", "LIST")
SCALING = grammar(_scaling, "auto, dtype, percentile, card or LOW,HIGH")
WINDOW = grammar(window_values, "CENTER,WIDTH or a preset")
SELECT = grammar(parse_select, "KEY=VALUE")
MODEL = grammar(check_architecture, "an architecture of the model registry")
DEVICE = grammar(check_device, "auto, cpu, cuda or cuda:N")
CLUSTER = grammar(local_cluster_workers, "local:N or local")
