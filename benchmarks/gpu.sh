#!/usr/bin/env bash
# Everything a GPU machine must do for tilepipe, in one go, within 8 minutes on an H100/H200:
#   1. make the dependencies importable: the machine may have python3 + torch + torchvision and no
#      package index, so what it lacks is installed from the wheels in .whl/ at the repository root
#      (made by benchmarks/fetch_wheels.sh, carried beside the working tree); tilepipe itself runs
#      from the working tree (PYTHONPATH), as nothing can build it without an index;
#   2. run the CUDA tests (tests/test_cuda.py);
#   3. run benchmarks/throughput.py on an 8192^2 mosaic (built on the CPUs while the tests run):
#      ceiling, tilepipe, naive loop and MONAI
#      side by side in one process, same tile size, overlap, batch size and precision (bf16), at
#      output stride 8 and 16;
#   4. leave in OUT_DIR: environment.txt, cuda_tests.txt (+ .xml), throughput.txt (everything the
#      benchmark printed), throughput.json, throughput_table.md, mosaic.txt, gpu_sh.log.
# --cpu-smoke runs the same steps on the CPU, on a tiny mosaic with the stand-in model, in about a
# minute, so the script is known to work before any GPU time is spent (tests/test_gpu_script.py).
#
#   benchmarks/gpu.sh OUT_DIR
#   benchmarks/gpu.sh --cpu-smoke OUT_DIR
# Environment: PYTHON (default python3), BATCH (default 16), WORKERS (default 4), SIZE (default 8192),
# WORKDIR for the mosaic and stores (default /tmp/tilepipe-gpu-bench; not OUT_DIR: the mosaic is big).
# Exit status: 0 when the tests and the benchmark both ran and passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [[ "${1:-}" == --cpu-smoke ]]; then smoke=1; shift; fi
[[ $# -eq 1 ]] || { echo "usage: benchmarks/gpu.sh [--cpu-smoke] OUT_DIR" >&2; exit 2; }
mkdir -p "$1" && out=$(cd "$1" && pwd)
PYTHON=${PYTHON:-python3}
WORKDIR=${WORKDIR:-/tmp/tilepipe-gpu-bench}
started=$SECONDS
log() { echo "[gpu.sh +$((SECONDS - started))s] $*" | tee -a "$out/gpu_sh.log"; }

# 1. dependencies
needed="rasterio zarr numcodecs dask distributed pydicom pyproj monai pytest yaml click psutil"
if "$PYTHON" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" $needed; then
  log "dependencies already importable"
elif compgen -G ".whl/*.whl" >/dev/null; then
  site=${TMPDIR:-/tmp}/tilepipe-site
  log "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu.sh: dependencies missing and no wheels in .whl/: run benchmarks/fetch_wheels.sh where an index is reachable" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "date: $(date -u +%FT%TZ)"; echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  echo "cpus: $(nproc)"
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt" | tee -a "$out/gpu_sh.log"
if [[ $smoke == 0 ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu.sh: no CUDA device here; use --cpu-smoke" >&2
  exit 2
fi

# 2. the benchmark's mosaic, built on the CPUs while the tests use the GPU
if [[ $smoke == 1 ]]; then
  side=384
  sizes=(--size $side --tile-size 128 --overlap 16 --block-size 256 --chunk-size 128 --model standin --device cpu
         --naive-limit 4 --ceiling-seconds 0.3 --batch-size 4 --workers 2)
else
  side=${SIZE:-8192}
  sizes=(--size "$side" --tile-size 512 --overlap 64 --block-size 2048 --chunk-size 512
         --model deeplabv3_resnet101 --device cuda --naive-limit 64 --ceiling-seconds 5
         --batch-size "${BATCH:-16}" --workers "${WORKERS:-4}")
fi
"$PYTHON" -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from _common import build_mosaic
path, built = build_mosaic(Path(sys.argv[1]), int(sys.argv[2])); print(path, 'built' if built else 'cached')" \
  "$WORKDIR" "$side" > "$out/mosaic.txt" 2>&1 &
mosaic=$!

# 3. the CUDA tests (skipped, and so quick, without a device)
log "CUDA tests"
timeout 150 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py --junitxml="$out/cuda_tests.xml" \
  > "$out/cuda_tests.txt" 2>&1
tests_rc=$?
tail -n 15 "$out/cuda_tests.txt" | tee -a "$out/gpu_sh.log"
log "CUDA tests exit status $tests_rc"

# 4. the side-by-side benchmark
wait $mosaic || { log "building the mosaic failed: $(tail -n 1 "$out/mosaic.txt")"; exit 1; }
log "throughput.py ${sizes[*]}"
timeout 300 "$PYTHON" benchmarks/throughput.py "${sizes[@]}" --weights none --precision bf16 --output-stride 8,16 \
  --workdir "$WORKDIR" --json "$out/throughput.json" --table "$out/throughput_table.md" > "$out/throughput.txt" 2>&1
bench_rc=$?
grep -E "^(target|GPU busy|NVML|\|)" "$out/throughput.txt" | tee -a "$out/gpu_sh.log"
log "throughput.py exit status $bench_rc; outputs in $out"
[[ $tests_rc == 0 && $bench_rc == 0 ]]
