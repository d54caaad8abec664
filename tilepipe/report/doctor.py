"""``tilepipe doctor``: the facts that decide whether and how fast tilepipe runs here."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def default_weights_file() -> Path:
    import torch
    from torchvision.models.segmentation import DeepLabV3_ResNet101_Weights

    url = DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def facts() -> dict[str, str]:
    import dask
    import distributed
    import numpy
    import pydicom
    import rasterio
    import torch
    import torchvision
    import zarr

    from .. import __version__

    cuda = torch.cuda.is_available()
    gpus = [f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
            for i in range(torch.cuda.device_count())] if cuda else []
    weights = default_weights_file()
    return {
        "tilepipe": __version__,
        "python": f"{platform.python_version()} on {platform.platform()}",
        "cpus": str(os.cpu_count()),
        "torch": f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'}), {torch.get_num_threads()} threads",
        "cuda": f"available, {len(gpus)} GPU(s): {'; '.join(gpus)}" if cuda else "not available: tilepipe will run on the CPU",
        "bf16 on GPU": str(torch.cuda.is_bf16_supported()) if cuda else "n/a",
        "torchvision": torchvision.__version__,
        "rasterio": f"{rasterio.__version__} (GDAL {rasterio.__gdal_version__})",
        "zarr": zarr.__version__,
        "dask": f"{dask.__version__} (distributed {distributed.__version__})",
        "numpy": numpy.__version__,
        "pydicom": pydicom.__version__,
        "default weights": (f"cached at {weights} ({weights.stat().st_size / 2**20:.0f} MB)" if weights.exists()
                            else f"not cached; the first run downloads them to {weights} (or pass --weights PATH)"),
    }


def report() -> str:
    rows = facts()
    width = max(map(len, rows))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items())
