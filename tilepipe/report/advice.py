"""The summary's "Bottleneck": the stage that dominated this run and what would make it faster.

:func:`bottleneck` reads the run's measured figures (:mod:`.figures`), never a guess: the stage
with the most busy seconds, and advice that names the option to change and, where the plan can
tell, the figure it would change (multiply-adds at the other output stride, the overlap cost
factor of a wider block).
"""

from __future__ import annotations

from dataclasses import replace

from .figures import rounded

STAGE_ADVICE = {
    "read": "reading dominates: use a tiled, compressed input (a COG), a local copy, or more --workers",
    "stitch": "blending dominates: it runs on the engine's device, so a GPU speeds it up; "
              "--blending crop is cheaper than gaussian",
    "write": "writing dominates: use a faster disk or a larger --chunk-size",
    "preprocess": "scaling tiles dominates: more --workers spread it over cores",
}
"""What to change when a stage other than the forward pass dominates."""


def bottleneck(d: dict, plan, model) -> dict:
    """``bottleneck``: the stage that dominated (``timing.stage_busy_seconds``), its share of the
    wall time, and what would make this run faster, from the summary ``d``, its ``plan``
    (:class:`tilepipe.partition.Plan`) and ``model`` (its architecture)."""
    busy = d["timing"]["stage_busy_seconds"]
    wall = d["timing"]["wall_seconds"]
    stage = max(busy, key=busy.get)
    share = busy[stage] / wall if wall else 0.0
    advice = []
    setup = d["timing"]["sequential_seconds"]["setup"]
    if wall and setup / wall > 0.3:
        advice.append(f"setup (opening the input, loading weights) took {setup:.1f} s of {wall:.1f} s: a fixed cost "
                      "that larger inputs amortise")
    if stage == "forward":
        advice += _forward_advice(d, plan, model)
    elif stage in STAGE_ADVICE:
        advice.append(STAGE_ADVICE[stage])
    return {"stage": stage, "share_of_wall": rounded(share), "advice": advice}


def _forward_advice(d: dict, plan, model) -> list[str]:
    """The forward pass dominated: the device, precision and batch first, then a cheaper network
    (output stride 16) and fewer overlapping tiles (wider blocks)."""
    eng, pl = d["engine"], d["plan"]
    advice = []
    if eng["device"] == "cpu":
        advice.append(f"the network ran on the CPU at {d['throughput']['model_tflops_while_running']:.3f} TFLOP/s; "
                      "a CUDA GPU (--device cuda) is the change that matters")
    else:
        if eng["precision"] == "fp32":
            advice.append("use --precision bf16 (tensor cores)")
        advice.append(f"try a larger --batch-size than {eng['batch_size']}")
    if pl["output_stride"] == 8 and model.spec.architecture != "standin":
        cheaper = d["cost"]["other_output_strides"]["16"]
        advice.append(f"--output-stride 16 needs {cheaper / 1e9:.1f} G multiply-adds per tile instead of "
                      f"{d['model']['macs_per_tile'] / 1e9:.1f} G (check the accuracy trade-off)")
    if pl["overlap_cost_factor"] > 1.3 and plan.block_size <= max(plan.height, plan.width):
        bigger = replace(plan, block_size=plan.block_size * 2)
        if bigger.overlap_cost_factor < plan.overlap_cost_factor - 0.01:
            advice.append(f"--block-size {bigger.block_size} would lower the overlap cost factor from "
                          f"{plan.overlap_cost_factor:.2f} to {bigger.overlap_cost_factor:.2f} "
                          "(more memory per block)")
    return advice
