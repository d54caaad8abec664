"""Run options: one dataclass, filled from defaults, then a YAML file, then command-line flags.

Every option has the same name in the YAML file (``configs/*.yaml``), the Python API
(``tilepipe.run(..., tile_size=512)``) and the CLI (``--tile-size``); hyphens and underscores are
interchangeable in the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from .errors import TilepipeError


@dataclass(frozen=True)
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
    block_size: int = 2048
    blending: str = "gaussian"
    # model
    model: str = "deeplabv3_resnet101"
    weights: str = "default"
    output_stride: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    # engine
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | str = 4
    compile: bool = False
    # schedule and output
    workers: int = 2
    cluster: str | None = None
    scheduler: str | None = None
    probabilities: bool = False
    overwrite: bool = False
    resume: bool = False

    def updated(self, **changes) -> RunOptions:
        """A copy with ``changes`` applied; ``None`` values mean "not given" and are ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TilepipeError(f"unknown option(s): {', '.join(unknown)}")
        given = {k: _coerce(k, v) for k, v in changes.items() if v is not None}
        return replace(self, **given)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _coerce(name: str, value):
    if name == "batch_size" and value != "auto":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TilepipeError(f"option batch_size: expected a positive integer or auto, got {value!r}") from None
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


def load_options(path: str | Path | None, base: RunOptions | None = None) -> RunOptions:
    """Options from a YAML file on top of ``base`` (defaults when omitted)."""
    options = base or RunOptions()
    if path is None:
        return options
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise TilepipeError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise TilepipeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TilepipeError(f"{path}: expected a mapping of option names to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    try:
        return options.updated(**data)
    except TilepipeError as exc:
        raise TilepipeError(f"{path}: {exc}") from None
