"""The measuring kit the throughput benchmark's modes share: peak host RSS and device memory per
phase, NVML utilisation, the model's ceiling on data already on the device, and ``tilepipe.run``
read back from its own summary.

Every phase is measured the same way (``Phase``), so a figure from one mode compares with the
same figure from another.
"""

from __future__ import annotations

import gc
import shutil
import threading
import time
from pathlib import Path

import torch

import tilepipe
from _common import maxrss_bytes, proc_status_bytes as _proc_status_bytes
from tilepipe.device import PRECISIONS, resolve_device

MB = 1e6


def run_kwargs(args, **changes) -> dict:
    """The tilepipe options every measurement shares (``changes`` override them)."""
    kwargs = dict(model=args.model, weights=args.weights, output_stride=args.output_stride, device=args.device,
                  precision=args.precision, batch_size=args.batch_size, compile=args.compile, workers=args.workers,
                  tile_size=args.tile_size, overlap=args.overlap, block_size=args.block_size,
                  chunk_size=args.chunk_size, overwrite=True)
    kwargs.update(changes)
    return kwargs


def _reset_peak_rss() -> bool:
    """Reset Linux's resident high-water mark (VmHWM) to the current RSS: ``clear_refs`` 5."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_bytes("VmHWM") is not None
    except OSError:
        return False


PHASE_PEAKS: list[int] = []


def process_peak_rss() -> int:
    """The process's peak RSS over the whole benchmark. Resetting VmHWM also lowers what
    ``ru_maxrss`` reports afterwards (Linux takes the larger of the two), so the phases' own
    peaks are kept and the largest of them and ``ru_maxrss`` is the process-wide figure."""
    return max([maxrss_bytes(), *PHASE_PEAKS])


class Phase:
    """Wall time, peak host RSS and peak device memory of one measurement.

    Host: where Linux lets a process reset its high-water mark, the peak is this phase's own
    (VmHWM after a reset at the start, which still counts what was resident then: Python, torch,
    the model); elsewhere it is ``ru_maxrss``, the process's high-water mark since it started.
    Device: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.own_peak = _reset_peak_rss()
        self.rss_at_start = _proc_status_bytes("VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        self.host_peak = _proc_status_bytes("VmHWM") if self.own_peak else maxrss_bytes()
        PHASE_PEAKS.append(self.host_peak or 0)
        self.device_peak = torch.cuda.max_memory_allocated(self.device) if self.cuda else None
        return False

    def memory(self) -> dict:
        return {
            "host_peak_rss_bytes": self.host_peak,
            "host_rss_at_start_bytes": self.rss_at_start,
            "host_peak_scope": "this phase (VmHWM reset at its start)" if self.own_peak
            else "process high-water mark since start (ru_maxrss)",
            "device_peak_allocated_bytes": self.device_peak,
        }

    def memory_line(self) -> str:
        host = f"peak host RSS {self.host_peak / MB:.0f} MB" + ("" if self.own_peak else " (process high-water mark)")
        if self.rss_at_start:
            host += f" (RSS at start {self.rss_at_start / MB:.0f} MB)"
        device = f", peak device memory {self.device_peak / MB:.0f} MB" if self.device_peak is not None else ""
        return host + device


class UtilisationSampler:
    """NVML's GPU utilisation (percent of time a kernel ran), sampled in a thread, when
    ``torch.cuda.utilization`` works (it needs the ``nvidia-ml-py`` package); else nothing."""

    def __init__(self, device: torch.device, period: float = 0.1):
        self.device, self.period, self.samples = device, period, []
        self.available = False
        if device.type == "cuda":
            try:
                torch.cuda.utilization(device)
                self.available = True
            except Exception:  # no pynvml, or NVML refuses
                pass
        self._stop = threading.Event()

    def _loop(self):
        while not self._stop.wait(self.period):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:
                return

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.available:
            self._stop.set()
            self._thread.join()
        return False

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward(module, x: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """The network as tilepipe's engine runs it: channels_last, autocast at ``precision``, inference mode."""
    dtype = PRECISIONS[precision]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return module(x.contiguous(memory_format=torch.channels_last))["out"]


def rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def ratio(a, b):
    return a / b if a and b else None


def measure_ceiling(engine, tile: tuple[int, int], batch: int, min_seconds: float) -> dict:
    """The bare network on one random batch already on the device, timed in synchronised rounds."""
    device, module = engine.device, engine.module
    x = torch.randn((batch, 3, *tile), device=device).contiguous(memory_format=torch.channels_last)
    warmups = 3 if engine.cuda else 1  # cuDNN autotuning (and torch.compile) happen in the first passes
    t0 = time.perf_counter()
    for _ in range(warmups):
        forward(module, x, device, engine.precision)
    sync(device)
    per_pass = (time.perf_counter() - t0) / warmups
    round_size = max(1, int(0.5 / max(per_pass, 1e-6)))  # about half a second between synchronisations
    passes, start = 0, time.perf_counter()
    while True:
        for _ in range(round_size):
            forward(module, x, device, engine.precision)
        sync(device)
        passes += round_size
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and passes >= 3:
            break
    tile_mp = passes * batch * tile[0] * tile[1] / 1e6
    return {"batch_size": batch, "tile": list(tile), "passes": passes, "seconds": rounded(elapsed),
            "warmup_passes": warmups, "warmup_seconds": rounded(per_pass * warmups),
            "tile_megapixels_per_second": rounded(tile_mp / elapsed, 6)}


def run_tilepipe(image: Path, store: Path, kwargs: dict, sample_gpu: bool = False,
                 keep_mask: bool = False) -> dict:
    """``tilepipe.run`` and the figures of its summary; the store is deleted afterwards (its
    summary.json/.md stay beside it). With ``keep_mask`` the mask comes back as an array."""
    device = resolve_device(kwargs.get("device", "auto"))
    with UtilisationSampler(device if sample_gpu else torch.device("cpu")) as nvml, Phase(device) as phase:
        summary = tilepipe.run(str(image), str(store), **kwargs).data
    mask = tilepipe.open(str(store)).mask[...] if keep_mask else None
    shutil.rmtree(store, ignore_errors=True)
    timing, plan, thr, eng = summary["timing"], summary["plan"], summary["throughput"], summary["engine"]
    mp = summary["input"]["megapixels"]
    blocks_wall = timing["sequential_seconds"]["blocks"]
    forward_busy = timing["stage_busy_seconds"]["forward"]
    out = {
        "image": str(image),
        "megapixels": mp,
        "wall_seconds": timing["wall_seconds"],
        "sequential_seconds": timing["sequential_seconds"],
        "megapixels_per_second": thr["megapixels_per_second"],
        "megapixels_per_second_blocks_only": rounded(mp / blocks_wall, 6) if blocks_wall else None,
        "overlap_cost_factor": plan["overlap_cost_factor"],
        "lattice_tiles": plan["lattice_tiles"],
        "lattice_factor": rounded(plan["lattice_tiles"] * plan["tile"][0] * plan["tile"][1] / (mp * 1e6)),
        "tiles_computed": plan["tiles_computed"],
        "forward_calls": plan["forward_calls"],
        "blocks": plan["blocks"],
        "stage_busy_seconds": timing["stage_busy_seconds"],
        "forward_busy_seconds": forward_busy,
        "forward_busy_over_blocks_wall": rounded(forward_busy / blocks_wall) if blocks_wall else None,
        "nvml_gpu_utilisation": rounded(nvml.mean),
        "gpu_busy_fraction": eng["gpu_busy_fraction"],
        "model_tflops_while_running": thr["model_tflops_while_running"],
        "fraction_of_device_peak": thr["fraction_of_device_peak"],
        "bottleneck": summary["bottleneck"],
        "engine": {k: eng[k] for k in ("device", "device_name", "precision", "batch_size", "torch_threads",
                                       "compile_warmup_seconds")},
        "summary_files": [str(store.with_suffix("")) + s for s in (".summary.json", ".summary.md")],
        "elapsed_seconds_in_benchmark": rounded(phase.seconds),
        **phase.memory(),
    }
    if keep_mask:
        out["_mask"] = mask
    return out


def print_tilepipe(label: str, r: dict) -> None:
    busy = ", ".join(f"{k} {v:.2f}" for k, v in r["stage_busy_seconds"].items())
    seq = r["sequential_seconds"]
    print(f"{label}: {r['megapixels_per_second']:.4g} image MP/s ({r['megapixels']:.2f} MP in wall "
          f"{r['wall_seconds']:.2f} s = setup {seq['setup']:.2f} + blocks {seq['blocks']:.2f} + finalise "
          f"{seq['finalize']:.2f}; blocks only {r['megapixels_per_second_blocks_only']:.4g} MP/s), overlap cost "
          f"factor {r['overlap_cost_factor']:.3f}, {r['tiles_computed']} tiles in {r['forward_calls']} forward "
          f"passes, {r['blocks']} blocks", flush=True)
    print(f"  stage busy s: {busy}; forward busy {r['forward_busy_seconds']:.2f} s; "
          f"bottleneck {r['bottleneck']['stage']}")
    print(f"  {memory_text(r)}", flush=True)


def memory_text(r: dict) -> str:
    text = f"peak host RSS {r['host_peak_rss_bytes'] / MB:.0f} MB"
    if r.get("host_rss_at_start_bytes"):
        text += f" (RSS at start {r['host_rss_at_start_bytes'] / MB:.0f} MB)"
    if r.get("device_peak_allocated_bytes") is not None:
        text += f", peak device memory {r['device_peak_allocated_bytes'] / MB:.0f} MB"
    return text


