"""The model card file: what a checkpoint needs beside its weights to be used correctly.

A small YAML or JSON file, found beside the checkpoint (``landcover.pt`` -> ``landcover.yaml``,
``.yml`` or ``.json``) or given with ``--model-card``. Every key is optional:

```yaml
name: landcover-s2-4band
architecture: deeplabv3_resnet50
bands: [1, 2, 3, 4]              # default --bands (1-based, in the order the network takes them)
scaling:                          # per band, in the units of the file, one of:
  low: [0, 0, 0, 0]               #   (v - low) / (high - low), clipped to [0, 1]
  high: [3000, 3000, 3000, 6000]
  # mean: [...]                   #   (v - mean) / std, not clipped
  # std: [...]
classes:
  - {name: water, colour: "#1f78b4"}
  - {name: forest, colour: [51, 160, 44]}
output_stride: 16
tile_size: 256                    # the tile size it was trained at
provenance: {trained_on: "...", by: "...", licence: "..."}
```

The card's scaling replaces the whole map from file values to network input (no ImageNet
normalisation follows it). Values from the card sit between the defaults and the user's config
file and flags: see :func:`tilepipe.config.apply_card` (the precedence belongs to the options,
not to the card).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..errors import TilepipeError, first_line

CARD_SUFFIXES = (".yaml", ".yml", ".json")
CARD_KEYS = frozenset({"name", "architecture", "bands", "scaling", "classes", "output_stride", "tile_size",
                       "provenance"})
CARD_OPTIONS = {"architecture": "model", "bands": "bands", "scaling": "scaling", "output_stride": "output_stride",
                "tile_size": "tile_size", "class_names": "class_names"}
"""Card field -> the run option it fills when the user did not set that option."""


@dataclass(frozen=True)
class CardScaling:
    """Per-band scaling in file units: ``low/high`` (clipped to [0, 1]) or ``mean/std`` (not clipped)."""

    kind: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    """For ``mean/std``: low = mean and high = mean + std, so (v - low) / (high - low) = (v - mean) / std."""

    @property
    def clip(self) -> bool:
        return self.kind == "low/high"

    def describe(self) -> dict:
        if self.kind == "low/high":
            return {"low": list(self.low), "high": list(self.high)}
        return {"mean": list(self.low), "std": [h - m for m, h in zip(self.low, self.high)]}


@dataclass(frozen=True)
class CardFile:
    """A model card file as read: the values it holds (None where it holds none)."""

    path: str
    sha256: str
    name: str | None = None
    architecture: str | None = None
    bands: tuple[int, ...] | None = None
    scaling: CardScaling | None = None
    class_names: tuple[str, ...] | None = None
    class_colours: tuple[tuple[int, int, int], ...] | None = None
    output_stride: int | None = None
    tile_size: int | None = None
    provenance: str = "{}"
    """JSON text of the card's free-form provenance mapping (a string keeps the card hashable)."""

    def values(self) -> dict:
        """The run options this card sets, by option name (only those it holds)."""
        out = {}
        for field, option in CARD_OPTIONS.items():
            value = getattr(self, field)
            if value is not None:
                out[option] = "card" if field == "scaling" else value
        return out

    def describe(self) -> dict:
        return {"path": self.path, "sha256": self.sha256[:12], "name": self.name,
                "provenance": json.loads(self.provenance),
                "scaling": self.scaling.describe() if self.scaling else None,
                "class_colours": [list(c) for c in self.class_colours] if self.class_colours else None}


def find_card(explicit: str | None, weights: str) -> Path | None:
    """``--model-card`` when given, else a card beside a checkpoint file with the same stem."""
    if explicit:
        return Path(explicit).expanduser()
    weights_path = Path(weights).expanduser()
    if not weights_path.is_file():
        return None
    for suffix in CARD_SUFFIXES:
        candidate = weights_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def load_card(path: Path) -> CardFile:
    """Read and validate a card; any problem is one line naming the file and the key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TilepipeError(f"{path}: no such model card") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise TilepipeError(f"{path}: not a valid model card ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise TilepipeError(f"{path}: a model card is a mapping of keys ({', '.join(sorted(CARD_KEYS))})")
    unknown = sorted(set(map(str, data)) - CARD_KEYS)
    if unknown:
        raise TilepipeError(f"{path}: unknown model card key(s) {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(CARD_KEYS))})")

    def bad(key: str, why: str) -> TilepipeError:
        return TilepipeError(f"{path}: model card key {key!r}: {why}")

    card = CardFile(str(path), hashlib.sha256(raw).hexdigest())
    if "name" in data:
        card = replace(card, name=str(data["name"]))
    if "architecture" in data:
        card = replace(card, architecture=str(data["architecture"]))
    if "bands" in data:
        bands = data["bands"]
        if not isinstance(bands, list) or not bands or not all(isinstance(b, int) and b >= 1 for b in bands):
            raise bad("bands", f"expected a list of 1-based band numbers, got {bands!r}")
        card = replace(card, bands=tuple(bands))
    for key in ("output_stride", "tile_size"):
        if key in data:
            if not isinstance(data[key], int) or data[key] < 1:
                raise bad(key, f"expected a positive integer, got {data[key]!r}")
            card = replace(card, **{key: data[key]})
    if "scaling" in data:
        card = replace(card, scaling=_scaling(data["scaling"], bad))
    if "classes" in data:
        names, colours = _classes(data["classes"], bad)
        card = replace(card, class_names=names, class_colours=colours)
    if "provenance" in data:
        if not isinstance(data["provenance"], (dict, str)):
            raise bad("provenance", "expected a mapping (trained_on, by, licence, ...) or text")
        card = replace(card, provenance=json.dumps(data["provenance"], default=str, sort_keys=True))
    if card.bands and card.scaling and len(card.bands) != len(card.scaling.low):
        raise bad("scaling", f"{len(card.scaling.low)} values per key for {len(card.bands)} bands")
    return card


def _numbers(value, key: str, bad) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
        raise bad(f"scaling.{key}", f"expected a list of numbers (one per band), got {value!r}")
    return tuple(float(v) for v in value)


def _scaling(value, bad) -> CardScaling:
    if not isinstance(value, dict) or set(value) not in ({"low", "high"}, {"mean", "std"}):
        raise bad("scaling", "expected either low and high, or mean and std (lists, one value per band)")
    kind = "low/high" if "low" in value else "mean/std"
    first, second = ("low", "high") if kind == "low/high" else ("mean", "std")
    a, b = _numbers(value[first], first, bad), _numbers(value[second], second, bad)
    if len(a) != len(b):
        raise bad("scaling", f"{len(a)} {first} values but {len(b)} {second} values")
    if kind == "low/high" and not all(h > lo for lo, h in zip(a, b)):
        raise bad("scaling", "every high must be greater than its low")
    if kind == "mean/std" and not all(s > 0 for s in b):
        raise bad("scaling", "every std must be positive")
    return CardScaling(kind, a, b if kind == "low/high" else tuple(m + s for m, s in zip(a, b)))


def _classes(value, bad) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...] | None]:
    if not isinstance(value, list) or not value:
        raise bad("classes", "expected a list of {name, colour} entries or of names")
    names, colours = [], []
    for i, item in enumerate(value):
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or "name" not in item or set(item) - {"name", "colour", "color"}:
            raise bad("classes", f"entry {i}: expected a name and optionally a colour, got {item!r}")
        names.append(str(item["name"]))
        colour = item.get("colour", item.get("color"))
        if colour is not None:
            colours.append(_colour(colour, lambda why: bad("classes", f"entry {i} ({item['name']}): {why}")))
    if colours and len(colours) != len(names):
        raise bad("classes", "give a colour for every class or for none")
    return tuple(names), tuple(colours) if colours else None


def _colour(value, bad) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        return tuple(value)
    raise bad(f"colour {value!r}: expected '#rrggbb' or [r, g, b] with 0-255 values")
