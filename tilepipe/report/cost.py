"""The summary section "Where the multiply-adds go": the run's network cost, counted, and why it
stays affordable, each sentence carrying a figure of this run or a catalog id.

:func:`cost_figures` counts (on the meta device, at the run's tile size) the multiply-adds of each
stage of the network, of its backbone's convolutions by kernel shape, of the same network at its
other output stride, and of the lighter torchvision models on the same tile. :func:`cost_sentences`
is a pure function of the summary's figures, like :mod:`.tactics`. A sentence that cites a
paper also carries the phrase of that paper's catalog entry it rests on (``quotes``), so a test can
check that no paper is cited for a claim its entry does not hold: the three seed papers
(2406.05612, 2308.08504, 2306.14113) are image-classification and training-data studies, and the
sentences say so rather than borrow segmentation results from them.
"""

from __future__ import annotations

import torch

from ..model.architectures import REGISTRY
from ..model.costs import conv_macs_by_kernel, count_macs, macs_by_stage
from .tactics import counted

LIGHTER = ("deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
PUBLISHED_MIOU = "COCO-val2017-VOC-labels"


def cost_figures(model, tile: tuple[int, int]) -> dict:
    """Counts for the run's model on one ``tile`` (height, width); JSON-ready."""
    h, w = tile
    module = model.meta_copy()
    stages = macs_by_stage(module, model.arch.stages(module), h, w, model.in_channels)
    total = sum(m for _, m in stages)
    figures = {
        "architecture": model.arch.name,
        "backbone": model.arch.backbone,
        "tile": [h, w],
        "macs_per_tile": total,
        "stages": [{"stage": s, "macs": m, "share": round(m / total, 4) if total else 0.0} for s, m in stages],
        "backbone_conv_macs_by_kernel": (conv_macs_by_kernel(module, h, w, model.in_channels)
                                         if hasattr(module, "backbone") else {}),
        "other_output_strides": {str(s): model.macs_per_tile(h, w, s) for s in model.arch.output_strides
                                 if s != model.output_stride},
        "lighter": [],
    }
    for name in LIGHTER:
        arch = REGISTRY[name]
        if name == model.arch.name or model.arch.name == "standin":
            continue
        with torch.device("meta"):
            other = arch.make(model.num_classes, in_channels=model.in_channels)
        miou = {n: REGISTRY[n].weights.DEFAULT.meta["_metrics"][PUBLISHED_MIOU]["miou"]
                for n in (name, model.arch.name) if REGISTRY[n].weights is not None}
        figures["lighter"].append({"architecture": name, "backbone": arch.backbone,
                                   "macs_per_tile": count_macs(other, h, w, model.in_channels),
                                   "published_miou": miou})
    return figures


def _g(macs: float) -> str:
    return f"{macs / 1e9:.2f} G"


def _total(macs: float) -> str:
    """A run's total in the unit that keeps three significant figures readable (G or T)."""
    return f"{macs / 1e12:.2f} T" if macs >= 1e12 else f"{macs / 1e9:.2f} G"


def _sentence(text: str, refs=(), quotes: dict | None = None) -> dict:
    return {"text": text, "refs": list(refs), "quotes": quotes or {}}


def cost_sentences(d: dict) -> list[dict]:
    """The section's sentences, from the summary ``d`` (its ``cost`` figures, plan and throughput)."""
    c, p = d["cost"], d["plan"]
    total, (h, w) = c["macs_per_tile"], c["tile"]
    stages = c["stages"]
    out = [_sentence(
        f"One {h} x {w} tile costs {_g(total)} multiply-adds in {c['architecture']}: "
        + ", ".join(f"{s['stage']} {_g(s['macs'])} ({s['share']:.1%})" for s in stages)
        + f"; the {len(stages)} parts sum to the whole count")]
    kernels = c["backbone_conv_macs_by_kernel"]
    if c["backbone"].startswith("ResNet") and "3x3" in kernels and "1x1" in kernels:
        backbone = sum(s["macs"] for s in stages if s["stage"] != "head")
        out.append(_sentence(
            f"In the {c['backbone']} bottleneck blocks 1x1 convolutions narrow each block before its 3x3 "
            f"convolution and widen it after, so the 3x3 convolutions cost {_g(kernels['3x3'])} and the 1x1 "
            f"convolutions {_g(kernels['1x1'])} of the backbone's {_g(backbone)} per tile; at the blocks' full "
            f"width (4x the channels in and out) the same 3x3 convolutions would cost 16x, {_g(16 * kernels['3x3'])}",
            ["resnet-paper"], {"resnet-paper": "the 1x1 layers reduce and then restore dimensions"}))
    stride = p["output_stride"]
    for other, macs in c["other_output_strides"].items():
        ratio = max(total, macs) / min(total, macs)
        lever = (f", a bigger factor than the {p['overlap_cost_factor']:.2f}x this plan's overlap costs"
                 if ratio > p["overlap_cost_factor"] else "")
        out.append(_sentence(
            f"At output stride {stride} a tile costs {_g(total)}; at output stride {other} the same network "
            f"would cost {_g(macs)} ({ratio:.2f}x {'less' if macs < total else 'more'}{lever}), because atrous "
            "convolution at stride 8 keeps layer3 as well as layer4 at 1/8 of the tile side instead of 1/16; "
            "DeepLabv3 reports 'output stride 8 gives 75.18 mIOU versus 73.88 at output stride 16' (ResNet-50) "
            "for that price",
            ["tactic-output-stride", "deeplabv3-paper"],
            {"tactic-output-stride": "the intermediate feature maps are spatially four times smaller",
             "deeplabv3-paper": "output stride 8 gives 75.18 mIOU versus 73.88 at output stride 16"}))
    if not c["other_output_strides"] and c["backbone"].startswith("MobileNet"):
        out.append(_sentence(
            f"torchvision dilates only the last stage of MobileNetV3-Large, so {c['architecture']} runs at "
            f"output stride {stride} ({_g(total)} per tile)", ["torchvision-segmentation-weights"],
            {"torchvision-segmentation-weights": "the backbone's output stride is 16"}))
    if p["forward_calls"]:
        passes = counted(p["forward_calls"], "forward pass", "forward passes")
        out.append(_sentence(
            f"The pipeline's part: {counted(p['tiles_computed'], 'tile')} ran in {passes} "
            f"({p['tiles_computed'] / p['forward_calls']:.1f} tiles per pass)", ["tactic-tile-batching"]))
    if p["tiles_skipped_no_data"]:
        out.append(_sentence(
            f"{counted(p['tiles_skipped_no_data'], 'tile')} held no valid pixel and were never computed, "
            f"{_total(p['tiles_skipped_no_data'] * total)} multiply-adds "
            f"({p['compute_saved_by_skipping']:.1%} of the planned compute) saved", ["tactic-skip-nodata"]))
    pixels = d["input"]["megapixels"] * 1e6
    run_macs = p["tiles_computed"] * total
    if pixels:
        out.append(_sentence(
            f"Overlap makes the plan compute {p['overlap_cost_factor']:.2f}x the image's pixels: "
            f"{_total(run_macs)} multiply-adds for {d['input']['megapixels']} MP, "
            f"{run_macs / pixels:,.0f} per image pixel", ["tactic-halo-blending"]))
    for light in c["lighter"]:
        light_run = p["tiles_computed"] * light["macs_per_tile"]
        text = (f"A lighter backbone, {light['backbone']} in {light['architecture']} (output stride 16), would "
                f"cost {_g(light['macs_per_tile'])} per tile on this scene, {_total(light_run)} for the run's "
                f"{counted(p['tiles_computed'], 'tile')} instead of {_total(run_macs)} "
                f"({total / light['macs_per_tile']:.0f}x less)")
        miou = light["published_miou"]
        if c["architecture"] in miou:
            text += (f"; torchvision publishes {miou[light['architecture']]} mIoU for its COCO/VOC weights against "
                     f"{miou[c['architecture']]} for {c['architecture']}")
        out.append(_sentence(text, ["torchvision-segmentation-weights"]))
    out.append(
        _sentence(
            "The backbone comparison finds that 'some CNN architectures such as ConvNeXt, RegNet and EfficientNet "
            "perform well consistently across a diverse set of domains', remote sensing and medical images among "
            "them, but for fine-tuned image classification: it does not evaluate segmentation backbones, so it "
            "predicts no mask accuracy here", ["backbones-comparison-2406.05612"],
            {"backbones-comparison-2406.05612": "perform well consistently across a diverse set of domains"}))
    if c["backbone"].startswith("ResNet"):
        costliest = max((s for s in stages if s["stage"] != "head"), key=lambda s: s["macs"])
        out.append(_sentence(
            "ResBuilder removes and inserts ResNet blocks to save computational cost against off-the-shelf ResNets "
            "on image classification datasets; it reports no segmentation result, and here the costliest stage "
            f"is {costliest['stage']} ({_g(costliest['macs'])} per tile)",
            ["resbuilder-2308.08504"], {"resbuilder-2308.08504": "removing and inserting ResNet blocks"}))
    out.append(
        _sentence(
            "The data-redundancy study trains classifiers on 'a subset (e.g., 19%-59%) of the data' with "
            "equivalent accuracy, a training-time saving; at inference this run's data saving was the "
            f"{p['compute_saved_by_skipping']:.1%} of planned compute skipped as no-data",
            ["data-redundancy-2306.14113"],
            {"data-redundancy-2306.14113": "a subset (e.g., 19%-59%) of the data"}))
    return out


def render_cost(d: dict) -> list[str]:
    """Markdown lines of the section."""
    c = d["cost"]
    lines = ["## Where the multiply-adds go", "",
             f"{c['architecture']}, one {c['tile'][0]} x {c['tile'][1]} tile, counted on the meta device:", "",
             "| part | G multiply-adds | share |", "|---|---:|---:|"]
    lines += [f"| {s['stage']} | {s['macs'] / 1e9:.3f} | {s['share']:.1%} |" for s in c["stages"]]
    lines += [f"| **whole model** | {c['macs_per_tile'] / 1e9:.3f} | 100% |", ""]
    lines += [f"- {s['text']}." + (f" [{', '.join(s['refs'])}]" if s["refs"] else "") for s in c["sentences"]]
    return lines
