"""Where a run's options come from: defaults, then a model card, then a YAML config file, then
``options=``, API keywords or command-line flags.

The options themselves are declared in :mod:`tilepipe.options`; here a config file is read
against that declaration (an unknown key or a value an option does not accept is one error line
naming the file and the key), and :func:`resolve_settings` applies the layers and records where
each value came from (``default``, ``card``, ``config`` or ``flag``), which the run summary
reports. A value given explicitly wins over the layers below it even when it equals the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import TilepipeError, first_line
from .options import OPTIONS, BadValue, RunOptions


@dataclass(frozen=True)
class Settings:
    """The resolved options, where each came from, and the model card file they used (if any)."""

    options: RunOptions
    origins: dict = field(default_factory=dict)
    """Option name -> ``default``, ``card``, ``config`` or ``flag``."""
    card_file: object = None
    """The :class:`tilepipe.model.card.CardFile`, or None."""


def resolve_settings(config=None, options: RunOptions | None = None, **overrides) -> Settings:
    """Defaults < model card < the YAML ``config`` file < ``options`` < keyword ``overrides``.
    ``options`` and ``overrides`` are the flags: only the names they were given count.

    The card is ``model_card`` when given, else a card beside the checkpoint (same stem)."""
    from .model.card import find_card, load_card

    from_file = load_options(config)
    flags = (options or RunOptions()).updated(**overrides)
    resolved = from_file.updated(**{k: getattr(flags, k) for k in flags.given})
    origins = ({k: "default" for k in OPTIONS} | {k: "config" for k in from_file.given}
               | {k: "flag" for k in flags.given})
    card_path = find_card(resolved.model_card, str(resolved.weights))
    card_file = load_card(card_path) if card_path else None
    resolved, origins = apply_card(resolved, origins, card_file)
    return Settings(resolved, origins, card_file)


def apply_card(options: RunOptions, origins: dict[str, str], card) -> tuple[RunOptions, dict[str, str]]:
    """Fill the options the user left at their defaults from the card (a
    :class:`tilepipe.model.card.CardFile`, or None).

    Precedence, lowest first: default < card < config file < flag (or API keyword). ``origins``
    maps each option name to where its value came from; returns the new options and origins."""
    if card is None:
        return options, origins
    from .model.card import CARD_OPTIONS

    taken = {k: v for k, v in card.values().items() if origins.get(k, "default") == "default"}
    try:
        return options.updated(**taken), {**origins, **{k: "card" for k in taken}}
    except BadValue as exc:
        field = next(f for f, option in CARD_OPTIONS.items() if option == exc.option.name)
        raise TilepipeError(exc.in_file(card.path, field)) from None


def load_options(path: str | Path | None) -> RunOptions:
    """The options a YAML config file sets (defaults elsewhere; ``given`` names the keys it sets).

    Keys are option names, with hyphens or underscores; a null value sets nothing."""
    if path is None:
        return RunOptions()
    data = _read_mapping(Path(path))
    keys = {str(key).replace("-", "_"): key for key in data}
    unknown = [str(key) for name, key in keys.items() if name not in OPTIONS]
    if unknown:
        raise TilepipeError(f"{path}: unknown option(s): {', '.join(unknown)} (the options are listed in "
                            f"configs/satellite.yaml)")
    try:
        return RunOptions().updated(**{name: data[key] for name, key in keys.items()})
    except BadValue as exc:
        raise TilepipeError(exc.in_file(path, keys[exc.option.name])) from None


def _read_mapping(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise TilepipeError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise TilepipeError(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise TilepipeError(f"{path}: expected a mapping of option names to values")
    return data
