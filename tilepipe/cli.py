"""The ``tilepipe`` command: a thin click layer over :mod:`tilepipe.pipeline`.

Every run option is a flag here, made from its declaration (:mod:`tilepipe.options`), and a key
in a ``--config`` YAML file; flags win over the file.
A :class:`TilepipeError` becomes one ``Error: ...`` line and a non-zero exit, never a traceback;
a run stopped by a signal exits 130 (SIGINT) or 143 (SIGTERM). A fault that is a bug in tilepipe
ends ``run`` with one line too, its traceback in the ``--log-file``.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import warnings

import click

from . import __version__
from .errors import TilepipeError, fault_line
from .modes import ExportFormat
from .options import OPTIONS, BadValue, Option


def _user_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except TilepipeError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = getattr(exc, "exit_code", error.exit_code)  # an interrupted run's 130 / 143
            raise error from None
    return wrapper


def run_options(run: bool):
    """The options of ``tilepipe run`` (``run``) or ``tilepipe plan``, made from their declaration
    in :mod:`tilepipe.options`, plus ``--config``. Every flag defaults to None: "not given", so the
    config file's value, the card's or the default stays."""
    opts = [click.option("--config", "config", type=click.Path(dir_okay=False),
                         help="YAML file of options (see configs/); flags override it.")]
    opts += [option_flag(o) for o in OPTIONS.values() if run or not o.run_only]

    def decorate(func):
        for opt in reversed(opts):
            func = opt(func)
        return func
    return decorate


def option_flag(option: Option):
    """The click option for one declared run option. Its value is read by the option's parser as
    click parses the command line, so a bad value is a usage error like a bad choice."""
    shown = option.shown_default
    help = f"{option.help} [default: {shown}]" if shown and not option.parser.switch else option.help
    if option.parser.switch:
        names = f"{option.flag}/--no-{option.key}" if option.negatable else option.flag
        return click.option(names, option.name, is_flag=True, default=None, help=help)
    if option.parser.choices:
        return click.option(option.flag, option.name, type=click.Choice(option.parser.choices), help=help)
    return click.option(option.flag, option.name, metavar=option.parser.metavar, help=help,
                        callback=functools.partial(_read_flag, option))


def _read_flag(option: Option, ctx, param, value):
    if value is None:
        return None
    try:
        return option.read(value)
    except BadValue as exc:
        raise click.BadParameter(exc.reason, ctx, param) from None


class _OneLineErrors(click.Group):
    """Usage errors (a bad choice, a missing argument) as one ``Error:`` line like every other
    error, pointing to ``--help`` instead of printing the whole usage block."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if exc.ctx is not None:
                exc.message = f"{exc.message} (see '{exc.ctx.command_path} --help')"
                exc.ctx = None
            raise


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tilepipe")
def main():
    """Segment images too big for memory with DeepLabV3-ResNet101, tile by tile, into Zarr."""
    from .sources.dicom_pixels import JFIF_WARNING

    warnings.filterwarnings("ignore", message=JFIF_WARNING)  # the command's process is ours to set


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=str)
@click.option("-o", "--output", required=True,
              help="Output Zarr store (path or fsspec URL); for several inputs, the folder of their stores.")
@run_options(run=True)
@click.option("--explain", is_flag=True, help="Print the full run summary (markdown) after the run.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no run line; errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress and details to stderr (also when not a terminal).")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Write a detailed log (block tracebacks included) here.")
@_user_errors
def run(inputs, output, config, explain, quiet, verbose, log_file, **kwargs):
    """Segment INPUTS (GeoTIFFs, DICOM files, series folders or DICOMDIRs; a folder of rasters; a
    study with --all-series) into the Zarr store OUTPUT, or, for several, into OUTPUT/<name>.zarr
    each, with OUTPUT/batch.summary.md."""
    from .pipeline import RunFailed
    from .pipeline import run as run_pipeline
    from .report.progress import Progress

    _configure_logging(quiet, verbose, log_file)
    if _is_batch(inputs, config, kwargs):
        return _run_batch(inputs, output, config, explain, quiet, verbose, kwargs)
    input, = inputs
    progress = None if quiet else Progress(every=10.0 if verbose else None)
    try:
        summary = run_pipeline(input, output, config=config, progress=progress, **kwargs)
    except RunFailed as exc:
        if explain and exc.summary:
            click.echo(exc.summary.to_markdown(), err=True)
        raise
    except TilepipeError:
        raise
    except Exception as exc:  # a bug: one line here, the traceback in the log file
        logging.getLogger("tilepipe").debug("unexpected error", exc_info=True)
        where = f"its traceback is in {log_file}" if log_file else "--log-file FILE keeps its traceback"
        raise TilepipeError(f"unexpected error while writing {output}: {fault_line(exc)} (a bug in tilepipe; "
                            f"{where}; please report it)") from None
    finally:
        if progress:
            progress.close()
    if explain:
        click.echo(summary.to_markdown())
    elif not quiet:
        click.echo(_short(summary.data))


def _is_batch(inputs: tuple[str, ...], config, kwargs: dict) -> bool:
    """Several inputs, a folder of rasters or ``--all-series`` (given or from the config file)."""
    from .batch_inputs import collect_inputs
    from .config import load_options

    all_series = kwargs.get("all_series") or (kwargs.get("all_series") is None and load_options(config).all_series)
    return bool(all_series) or not collect_inputs(inputs).single


def _run_batch(inputs, output, config, explain, quiet, verbose, kwargs) -> None:
    from .batch import BatchFailed, batch_markdown, run_batch

    try:
        summary = run_batch(list(inputs), output, config=config, quiet=quiet, progress_every=10.0 if verbose else None,
                            **kwargs)
    except BatchFailed as exc:
        if explain:
            click.echo(batch_markdown(exc.summary), err=True)
        raise
    if explain:
        click.echo(batch_markdown(summary))
    elif not quiet:
        c = summary["counts"]
        click.echo(f"{output}: {c['inputs']} inputs, {c['complete']} complete, {c['kept']} kept, "
                   f"{summary['wall_seconds']:.1f} s, {summary['megapixels_per_second']} MP/s; "
                   f"summary: {output.rstrip('/')}/batch.summary.md")


def _configure_logging(quiet: bool, verbose: bool, log_file: str | None) -> None:
    logger = logging.getLogger("tilepipe")
    logger.handlers.clear()
    logger.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    logger.setLevel(logging.DEBUG if log_file else console.level)
    if log_file:
        handler = _LogFile(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


class _LogFile(logging.FileHandler):
    """The ``--log-file``; a record it cannot write (the disk that failed the run is full) is
    dropped, where logging's default would print a traceback on the terminal for each."""

    def handleError(self, record):
        pass


def _short(d: dict) -> str:
    head = [f"WARNING: {w}" for w in d["warnings"]]
    plan, thr, t = d["plan"], d["throughput"], d["timing"]
    head.append(
        f"{d['output']['store']}: mask {' x '.join(map(str, d['output']['mask_shape']))}, {plan['blocks']} blocks "
        f"({plan['blocks_no_data']} no-data), {plan['tiles_computed']} tiles, {t['wall_seconds']:.1f} s, "
        f"{thr['megapixels_per_second']} MP/s; summary: tilepipe summary {d['output']['store']}"
    )
    return "\n".join(head)


@main.command()
@click.argument("input", type=str)
@run_options(run=False)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--compare", is_flag=True, help="Also count the cost of every architecture and output stride on this scene (no weights needed).")
@click.option("--preview", type=click.Path(dir_okay=False), help="Draw the plan (blocks, one block's tiles, no-data) over a thumbnail to this PNG.")
@click.option("--preview-size", type=int, default=1024, show_default=True, help="Longest side of the --preview picture in pixels.")
@_user_errors
def plan(input, config, as_json, compare, preview, preview_size, **kwargs):
    """Dry run: blocks, tiles, overlap cost and estimated peak memory, without running the model."""
    from .pipeline import plan as make_plan

    info = make_plan(input, config=config, compare=compare, preview=preview, preview_size=preview_size, **kwargs)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    inp = info["input"]
    for warning in inp.get("warnings", []):  # what the run will warn about, its geometry included
        click.echo(f"WARNING: {warning}")
    click.echo(f"{inp['path']}: {info['image']['width']} x {info['image']['height']} px ({info['image']['megapixels']} MP), {inp['dtype']}, bands {inp['bands_used']}")
    m = info["model"]
    click.echo(f"model {m['architecture']}, weights {m['weights']}, {m['in_channels']} input channels, "
               f"{m['num_classes']} classes, {m['parameters'] / 1e6:.1f} M parameters")
    click.echo(f"tiles {info['tile'][0]} x {info['tile'][1]}, overlap {info['overlap']}, output stride {info['output_stride']}")
    click.echo(f"strips {info['strips']} of {info['strip_width']} px, blocks {info['blocks']} (one chunk row of a strip, "
               f"chunks {info['chunk_size']} px), tasks {info['tasks']}")
    click.echo(f"tiles computed {info['tiles_computed']} (distinct on the lattice {info['lattice_tiles']})")
    click.echo(f"overlap cost factor {info['overlap_cost_factor']} (pixels computed / image pixels)")
    click.echo(f"estimated peak memory {info['estimated_peak_memory_mb']} MB")
    if compare:
        click.echo(_compare_table(info["compare"]))
    if info["preview"]:
        click.echo(f"preview {info['preview']}")


def _compare_table(rows: list[dict]) -> str:
    """The ``plan --compare`` rows as an aligned text table."""
    head = ("architecture", "stride", "G mult-adds/tile", "mult-adds/image px", "params (M)",
            "torchvision GFLOPS @520 (counted)")
    lines = [head]
    for r in rows:
        if "note" in r:
            lines.append((r["architecture"], str(r["output_stride"]), r["note"], "", "", ""))
            continue
        pub = r.get("published")
        lines.append((r["architecture"], str(r["output_stride"]), f"{r['gmacs_per_tile']:.2f}",
                      f"{r['macs_per_image_pixel']:,}", f"{r['parameters'] / 1e6:.1f}",
                      f"{pub['torchvision_gflops']:.2f} ({pub['counted_gmacs']:.2f})" if pub else ""))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)


@main.command()
@click.argument("store", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of markdown.")
@_user_errors
def summary(store, as_json):
    """Show the run summary saved in STORE."""
    from .sink import MaskStore
    from .report.markdown import render_markdown

    data = MaskStore.open(store).summary
    click.echo(json.dumps(data, indent=2) if as_json else render_markdown(data))


@main.command()
def doctor():
    """Print what tilepipe runs on: torch/CUDA/GPU, rasterio/GDAL, zarr, dask, and the weights cache."""
    from .report.doctor import report

    click.echo(report())


@main.command()
@click.argument("entry_id", required=False)
@_user_errors
def catalog(entry_id):
    """List the reference catalog, or show entry ENTRY_ID (the ids a run summary cites)."""
    from .report.catalog import format_entry, format_listing, load_catalog

    entries = load_catalog()
    if entry_id is None:
        click.echo(format_listing(entries))
    elif entry_id in entries:
        click.echo(format_entry(entries[entry_id]))
    else:
        raise TilepipeError(f"no catalog entry {entry_id!r}; `tilepipe catalog` lists them")


@main.command("export")
@click.argument("store", type=str)
@click.argument("out", type=str)
@click.option("--to", "fmt", required=True, type=click.Choice([f.value for f in ExportFormat]), help="Output format.")
@click.option("--max-size", type=int, default=2048, show_default=True, help="png: longest side of the preview.")
@click.option("--overlay", is_flag=True, help="png: blend the mask over the input image.")
@click.option("--classes", default="", help="geoparquet/gpkg/geojson: only these classes (ids or names, comma-separated).")
@click.option("--min-area", type=float, help="geoparquet/gpkg/geojson: drop regions smaller than this (CRS units², "
                                             "pixels for a slide).")
@click.option("--simplify", type=float, help="geoparquet/gpkg/geojson: simplify with this tolerance (CRS units), "
                                             "shared edges kept shared.")
@_user_errors
def export_command(store, out, fmt, max_size, overlay, classes, min_area, simplify):
    """Export the mask in STORE to OUT: a Cloud Optimized GeoTIFF, a PNG preview, DICOM SEG, or one
    polygon per region (GeoParquet, GeoPackage, GeoJSON; QuPath GeoJSON for a slide)."""
    from .exporters import VECTOR, export

    options = {"max_size": max_size, "overlay": overlay} if fmt == ExportFormat.PNG else {}
    if fmt in VECTOR:
        options = {"classes": tuple(c.strip() for c in classes.split(",") if c.strip()), "min_area": min_area,
                   "simplify": simplify}
    click.echo(export(store, fmt, out, **options))


if __name__ == "__main__":
    main()
