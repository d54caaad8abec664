"""How raw pixel values become the [0, 1] intensities the model's normalisation expects.

The statistics are computed once, when the source is opened, from a *sample* of the image (the
smallest useful overview when the file has one of at most a few megapixels, otherwise a fixed
grid of small windows), never from a full read, nor from a big overview read whole: a 40,000 x 40,000 scene is opened in the time a thumbnail takes. They are
recorded in the store and the summary, because they decide what the network sees.

Non-finite values (NaN, +-Inf) are no data, wherever they come from: float rasters often use NaN
as nodata without saying so in the file. Sources pass their reads through :func:`mark_non_finite`,
and the statistics ignore such values, so one NaN can neither poison the percentiles nor reach
the network (where DeepLabV3's image pooling would spread it over the whole tile).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..errors import TilepipeError
from ..option_grammars import scaling_method

PERCENTILES = (2.0, 98.0)
"""The default percentiles of ``percentile`` (and ``auto``) scaling."""


@dataclass(frozen=True)
class ScalingRequest:
    """What the user asked for: ``auto``, ``dtype``, ``percentile`` or fixed ``LOW,HIGH``; or
    ``card``: a model card's per-band values (``per_band`` low and high, ``clip`` or not)."""

    method: str = "auto"
    percentiles: tuple[float, float] = PERCENTILES
    fixed: tuple[float, float] | None = None
    per_band: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    clip: bool = True
    origin: str = ""
    """Where ``per_band`` came from (the card's path), for the summary."""
    resolved: IntensityScaling | None = field(default=None, compare=False)
    """The numbers this request resolved to when the run's client opened the input: the task
    spec ships them, so that a worker never samples again (a sample, or a whole-image scan when
    the sample holds no valid pixel, in every worker process) and every worker scales alike, as
    the run's fingerprint records. Not part of the request's identity: it is what the rest of the
    request gives for this input, so a spec that carries it names the same source (and finds the
    source this process already opened)."""
    resolved_volumes: tuple[IntensityScaling, ...] = field(default=(), compare=False)
    """For a 4-D series, each volume's resolved numbers (``resolved`` is volume 0's): volumes hold
    different quantities and are scaled apart (:mod:`.dicom_window`)."""

    def for_volume(self, volume: int | None) -> ScalingRequest:
        """The request for one volume of a 4-D series: what the client resolved for it, if it did."""
        if volume is None or not self.resolved_volumes:
            return self
        return replace(self, resolved=self.resolved_volumes[volume])

    @classmethod
    def parse(cls, text: str, percentiles: tuple[float, float] = PERCENTILES) -> ScalingRequest:
        method, fixed = scaling_method(text)
        return cls(method, tuple(percentiles), fixed)


@dataclass(frozen=True)
class IntensityScaling:
    """Per-band linear map ``(v - low) / (high - low)``, clipped to [0, 1] unless ``clip`` is
    False (a model card's mean/std: low = mean, high = mean + std)."""

    method: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    sample: str
    """Where the statistics came from, in words, for the summary."""
    clip: bool = True

    def terms(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, span)`` as float32 (bands, 1, 1), a zero span replaced by 1: the value is
        ``clip((raw - low) / span, 0, 1)``, computed the same way on the host and on a GPU."""
        low = np.asarray(self.low, np.float32)[:, None, None]
        span = np.asarray(self.high, np.float32)[:, None, None] - low
        return low, np.where(span > 0, span, 1.0).astype(np.float32)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` is (bands, h, w) of any dtype; returns float32 in [0, 1]."""
        low, span = self.terms()
        out = raw.astype(np.float32)
        out -= low
        out /= span
        return np.clip(out, 0.0, 1.0, out=out) if self.clip else out

    def to_json(self) -> dict:
        return asdict(self)


def plane_scaling(source, plane: int | None) -> IntensityScaling:
    """The scaling of one plane: a source whose volumes are scaled apart (``volume_scalings``, a
    4-D DICOM series whose planes run volume-major) gives its plane's volume's, any other its one
    ``scaling``."""
    scalings = getattr(source, "volume_scalings", None)
    if not scalings or plane is None:
        return source.scaling
    return scalings[plane * len(scalings) // source.depth]


def mark_non_finite(pixels: np.ndarray, valid: np.ndarray) -> None:
    """In place, for a float read: a pixel with a non-finite value in any band becomes invalid,
    and every invalid pixel becomes 0 in all bands. Scaling then sees finite values of ordinary
    size only (a float nodata such as -3.4e38 would overflow when divided by a small span).
    Integer pixels cannot be non-finite and are left alone."""
    if pixels.dtype.kind not in "fc":
        return
    valid &= np.isfinite(pixels).all(axis=0)
    pixels[:, ~valid] = 0


def dtype_range(dtype: np.dtype) -> tuple[float, float] | None:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def finite_columns(values: np.ndarray) -> np.ndarray:
    """The pixels (columns of a (bands, n) array) whose every band is finite."""
    return values[:, np.isfinite(values).all(axis=0)] if values.dtype.kind in "fc" else values


def resolve_scaling(request: ScalingRequest, dtype: np.dtype, bands: int, sample) -> IntensityScaling:
    """Turn the request into numbers. ``sample()`` returns ``(values (bands, n), description)``
    of valid pixels and is only called when statistics are needed. A pixel (column) holding a
    non-finite value in any band is left out of the statistics. A request that carries its
    ``resolved`` numbers (a task on a worker) gets them, and nothing is sampled."""
    if request.resolved is not None:
        return request.resolved
    method = request.method
    if method == "auto":
        method = "dtype" if np.dtype(dtype) == np.uint8 else "percentile"
    if method == "card":
        low, high = request.per_band
        if len(low) != bands:
            raise TilepipeError(f"the model card {request.origin} gives scaling for {len(low)} band(s), "
                                f"the input gives {bands}")
        kind = "low/high" if request.clip else "mean/std"
        return IntensityScaling(f"model card ({kind})", low, high, request.origin, request.clip)
    if method == "fixed":
        low, high = request.fixed
        return IntensityScaling("fixed", (low,) * bands, (high,) * bands, "given on the command line")
    if method == "dtype":
        rng = dtype_range(dtype)
        if rng is None:
            raise TilepipeError(f"--scaling dtype needs an integer image, this one is {np.dtype(dtype).name}")
        return IntensityScaling("dtype", (rng[0],) * bands, (rng[1],) * bands, f"full {np.dtype(dtype).name} range")
    values, described = sample()
    values = finite_columns(values)
    if values.shape[1] == 0:  # the source looked everywhere it promises to: every pixel is no-data
        return IntensityScaling("none (no valid pixel)", (0.0,) * bands, (1.0,) * bands, described)
    p_low, p_high = request.percentiles
    low = np.percentile(values, p_low, axis=1)
    high = np.percentile(values, p_high, axis=1)
    return IntensityScaling(
        f"percentile {p_low:g}-{p_high:g}",
        tuple(float(v) for v in low),
        tuple(float(v) for v in high),
        described,
    )
