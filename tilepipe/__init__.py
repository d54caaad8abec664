"""tilepipe: segment images too big for memory with DeepLabV3-ResNet101, tile by tile, into Zarr.

Python API::

    import tilepipe
    summary = tilepipe.run("scene.tif", "scene_mask.zarr", weights="default")
    print(tilepipe.plan("scene.tif")["overlap_cost_factor"])
    store = tilepipe.open("scene_mask.zarr")
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tilepipe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from .options import RunOptions  # noqa: E402
from .errors import TilepipeError  # noqa: E402

__all__ = ["RunOptions", "RunFailed", "TilepipeError", "class_measures", "open", "plan", "run", "__version__"]
_PIPELINE = {"RunFailed", "open", "plan", "run"}


def class_measures(store: str) -> dict:
    """Per-class pixels, shares and areas or volumes of the tilepipe store ``store``, summed from
    the tallies its blocks left (the run summary's ``measures``; the mask is not read)."""
    from .measures import class_measures as measured
    from .sink import MaskStore

    return measured(MaskStore.open(str(store)).group)


def __getattr__(name: str):
    """The pipeline imports torch (seconds); load it only when the API is used, so that
    ``tilepipe --version``, ``tilepipe catalog`` and ``tilepipe export`` start instantly."""
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'tilepipe' has no attribute {name!r}")
