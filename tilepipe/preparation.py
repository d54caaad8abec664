"""Everything a run checks and builds before it creates any output: the source, model and engine
specs made from the options (by keyword), the source opened, the model's card read (or the engine
loaded), and the plan. ``tilepipe plan`` stops here; ``tilepipe run`` goes on from a
:class:`Prepared`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .blocks import RunContext
from .config import Settings
from .engine import EngineOptions, cached_engine
from .errors import TilepipeError
from .grid import TileGrid
from .model import CardFile, ModelCard, ModelSpec, model_card
from .options import RunOptions
from .partition import Plan
from .sources import SourceSpec, open_source
from .sources.scaling import ScalingRequest


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A run made ready: what it was asked, what it reads, which model, how the work is split, and
    the :class:`~tilepipe.blocks.RunContext` every task receives. The context's source spec
    carries the scaling this process resolved (:attr:`ScalingRequest.resolved`): statistics are
    sampled once per run, here, never again in a worker."""

    options: RunOptions
    source: object
    model: ModelCard
    engine: object | None
    """The loaded engine when the blocks run in this process; None when they run on workers
    (the client never puts the model on a device)."""
    plan: Plan
    context: RunContext
    origins: dict = field(default_factory=dict)
    """Where each option's value came from (see :func:`tilepipe.config.resolve_settings`)."""
    card_file: CardFile | None = None
    """The model card file the options came from, if any."""


def _scaling_request(options: RunOptions, card_file: CardFile | None) -> ScalingRequest:
    if options.scaling != "card":
        return ScalingRequest.parse(options.scaling, options.percentiles)
    if card_file is None or card_file.scaling is None:
        raise TilepipeError("--scaling card needs a model card with a 'scaling' key (--model-card PATH)")
    scaling = card_file.scaling
    return ScalingRequest(method="card", percentiles=tuple(options.percentiles), per_band=(scaling.low, scaling.high),
                          clip=scaling.clip, origin=card_file.path)


def _specs(input: str, options: RunOptions, card_file: CardFile | None) -> tuple[SourceSpec, ModelSpec, EngineOptions]:
    scaling = _scaling_request(options, card_file)
    by_card = card_file is not None and card_file.bands is not None and options.bands == card_file.bands
    source = SourceSpec(path=str(input), bands=options.bands, scaling=scaling, series=options.series,
                        bands_from=f"the model card {card_file.path}" if by_card else None,
                        window=options.window, level=options.level, select=options.select)
    model = ModelSpec(architecture=options.model, weights=str(options.weights), output_stride=options.output_stride,
                      num_classes=options.num_classes, class_names=options.class_names,
                      normalise=scaling.method != "card")
    engine = EngineOptions(device=options.device, precision=options.precision, batch_size=options.batch_size,
                           compile=options.compile)
    return source, model, engine


def _open_input(input: str, options: RunOptions, card_file: CardFile | None, run_id: str):
    """The source, and the model spec told how many bands the source gives."""
    source_spec, model_spec, engine_options = _specs(input, options, card_file)
    source = open_source(source_spec, run_id)
    model_spec = replace(model_spec, bands=len(source.bands), file_bands=source.describe()["band_count"])
    return source_spec, source, model_spec, engine_options


def _make_plan(source, options: RunOptions, output_stride: int) -> Plan:
    grid = TileGrid(tile_size=options.tile_size, overlap=options.overlap, output_stride=output_stride)
    return Plan(height=source.height, width=source.width, grid=grid, chunk_size=options.chunk_size,
                block_size=options.block_size, depth=source.depth, volumes=getattr(source, "volumes", None))


def prepare(input: str, output: str, settings: Settings, run_id: str = "", load_engine: bool = True) -> Prepared:
    """Open the source, read the model's card and build the plan; creates nothing. With
    ``load_engine`` (blocks running in this process) the engine is loaded too, so that weights
    that do not load are refused before any output exists; without it (``tilepipe plan``, a
    client of remote workers) the model is only described, on the meta device."""
    options = settings.options
    source_spec, source, model_spec, engine_options = _open_input(input, options, settings.card_file, run_id)
    engine = cached_engine(model_spec, engine_options) if load_engine else None
    card = engine.model.card if engine else model_card(model_spec)
    plan = _make_plan(source, options, card.output_stride)
    resolved = replace(source_spec.scaling, resolved=source.scaling,  # resolved once, here
                       resolved_volumes=getattr(source, "volume_scalings", ()))
    shipped = replace(source_spec, scaling=resolved)
    context = RunContext(source=shipped, model=model_spec, engine=engine_options, plan=plan, store_url=str(output),
                         blending=options.blending, probabilities=options.probabilities, run_id=run_id)
    return Prepared(options=options, source=source, model=card, engine=engine, plan=plan, context=context,
                    origins=settings.origins, card_file=settings.card_file)
