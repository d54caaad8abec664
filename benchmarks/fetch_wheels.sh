#!/usr/bin/env bash
# Download, into .whl/ at the repository root (git-ignored), the Python 3.12 manylinux x86_64 wheels
# that a GPU machine with python3 + torch + torchvision but no package index lacks; benchmarks/gpu.sh
# installs them there with `pip install --no-index --target`. One pinned version each (the versions
# the CI environment runs); no dependency resolution, so the list below is the whole closure minus
# what torch and torchvision bring (numpy, pillow, jinja2, filelock, sympy, networkx, triton, ...).
# GeoTIFF runs need pydicom (tilepipe checks whether an input is DICOM) but not the DICOM pixel
# decoders nor highdicom: those 9 MB come only with --with-dicom, so that the default set (what
# benchmarks/gpu.sh needs, about 53 MiB, 34 of them rasterio's GDAL) fits a 64 MiB carry.
#
#   benchmarks/fetch_wheels.sh               # then carry .whl/ with the working tree to the GPU machine
#   benchmarks/fetch_wheels.sh --with-dicom  # also highdicom and the JPEG / JPEG-LS / JPEG 2000 decoders
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}  # the GPU machine's Python; another only to rehearse gpu.sh elsewhere
DEST=.whl
PACKAGES=(
  # tilepipe's own dependencies
  rasterio==1.4.4 zarr==3.1.6 numcodecs==0.16.6 dask==2026.8.0 distributed==2026.8.0
  pydicom==3.0.2 click==8.5.1 pyyaml==6.0.4 psutil==7.2.2 fsspec==2026.9.0 pyproj==3.7.2
  # theirs
  affine==3.0.1 attrs==26.1.0 certifi==2026.10.19.post1 cligj==0.7.2 click-plugins==1.1.1.2 pyparsing==3.3.3
  cloudpickle==3.1.3 toolz==1.2.0 partd==1.4.2 locket==1.0.0 packaging==26.4
  msgpack==1.2.4 tblib==3.2.2 tornado==6.6.1 zict==3.0.0 sortedcontainers==2.4.0 urllib3==2.8.0
  donfig==0.8.1.post1 google-crc32c==1.9.0 typing-extensions==4.16.0
  # the benchmark's baseline, the tests, and NVML's utilisation for torch.cuda.utilization
  monai==1.6.1 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0 nvidia-ml-py==13.615.71
)
if [[ "$PY_VERSION" == 3.1[01] ]]; then  # dask needs the backport below Python 3.12
  PACKAGES+=(importlib-metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0)
fi
if [[ "${1:-}" == --with-dicom ]]; then
  PACKAGES+=(highdicom==0.28.2 pylibjpeg==2.1.0 pylibjpeg-libjpeg==2.4.0 pylibjpeg-openjpeg==2.6.0 pyjpegls==1.5.1)
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--with-dicom]" >&2; exit 2
fi
mkdir -p "$DEST"
for spec in "${PACKAGES[@]}"; do
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "$spec"
done
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sb "$DEST" | awk '{printf "%.1f MiB", $1 / 1048576}') in $DEST"
