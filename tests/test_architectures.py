"""Every supported architecture: random weights on a small real sample, checkpoint round trips
against torchvision's own builders, published weights by name, cost counted per stage and
compared with torchvision's published GFLOPS, and the summary's cost section."""

from __future__ import annotations

import re

import pytest
import rasterio
import torch
import zarr
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import segmentation

import tilepipe
from tests.conftest import shared_file
from tilepipe.report.catalog import load_catalog
from tilepipe.errors import TilepipeError
from tilepipe.model import REGISTRY, ModelSpec, load_model, macs_by_stage, model_card

ARCHITECTURES = ["deeplabv3_resnet101", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
                 "fcn_resnet101", "fcn_resnet50", "lraspp_mobilenet_v3_large"]
RUN = dict(weights="none", tile_size=64, overlap=16, chunk_size=64, block_size=128, workers=1)


def torchvision_model(name: str, num_classes: int = 5, aux: bool = False) -> torch.nn.Module:
    """The architecture straight from torchvision's public builder (the oracle)."""
    kwargs = {} if name.startswith("lraspp") else {"aux_loss": aux}
    return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs).eval()


def flops_total(model: torch.nn.Module, side: int, channels: int = 3) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.empty(1, channels, side, side, device="meta"))
    return counter.get_total_flops() // 2


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A 128 x 128 window of the real RGB.byte.tif scene, with its georeferencing."""
    src_path = shared_file("geotiff", "RGB.byte.tif")
    out = tmp_path_factory.mktemp("sample") / "rgb_window.tif"
    window = rasterio.windows.Window(300, 300, 128, 128)
    with rasterio.open(src_path) as src:
        profile = {**src.profile, "width": 128, "height": 128, "transform": src.window_transform(window)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return out


@pytest.fixture(scope="module")
def resnet101_summary(sample, tmp_path_factory):
    return tilepipe.run(str(sample), str(tmp_path_factory.mktemp("r") / "m.zarr"), model="deeplabv3_resnet101", **RUN)


@pytest.mark.real_model
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_random_weights_run_on_a_real_sample(name, sample, tmp_path, resnet101_summary):
    summary = resnet101_summary if name == "deeplabv3_resnet101" else \
        tilepipe.run(str(sample), str(tmp_path / "m.zarr"), model=name, **RUN)
    mask = zarr.open_group(summary["output"]["store"], mode="r")["mask"][...]
    assert mask.shape == (128, 128) and (mask < summary["model"]["num_classes"]).all()
    assert summary["model"]["architecture"] == name and summary["warnings"][0].startswith("RANDOM WEIGHTS")
    assert summary["model"]["output_stride"] == REGISTRY[name].output_strides[0]
    cost = summary["cost"]
    with torch.device("meta"):  # the same network from torchvision's builder, counted here on the 64 px tile
        oracle = flops_total(torchvision_model(name, num_classes=summary["model"]["num_classes"]), 64)
    assert sum(s["macs"] for s in cost["stages"]) == cost["macs_per_tile"] == summary["model"]["macs_per_tile"] == oracle


@pytest.mark.real_model
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_checkpoint_round_trip_gives_torchvisions_outputs(name, tmp_path):
    torch.manual_seed(7)
    source = torchvision_model(name, aux=not name.startswith("lraspp"))
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    loaded = load_model(ModelSpec(architecture=name, weights=str(path)))
    assert loaded.num_classes == 5 and loaded.in_channels == 3 and not loaded.random_weights
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x)["out"], source(x)["out"], rtol=1e-5, atol=1e-5)


def test_published_weights_by_enum_name_offline_say_what_to_do(offline_weights):
    with pytest.raises(TilepipeError) as err:
        load_model(ModelSpec(architecture="lraspp_mobilenet_v3_large", weights="COCO_WITH_VOC_LABELS_V1"))
    assert "lraspp_mobilenet_v3_large-d234d4ea.pth" in str(err.value) and "--weights PATH" in str(err.value)
    geometry = model_card(ModelSpec(architecture="fcn_resnet50",
                                    weights="FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"))
    assert geometry.num_classes == 21 and geometry.class_names[0] == "__background__"


def test_unknown_architecture_and_foreign_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(TilepipeError, match="choose one of deeplabv3_resnet101"):
        load_model(ModelSpec(architecture="unet"))
    torch.save({"model_state": torchvision_model("fcn_resnet50").state_dict()}, tmp_path / "vainf.pth")
    with pytest.raises(TilepipeError, match="DeepLabV3Plus-Pytorch checkpoint, but that repository has no fcn_resnet50"):
        load_model(ModelSpec(architecture="fcn_resnet50", weights=str(tmp_path / "vainf.pth")))
    torch.save(torchvision_model("fcn_resnet50").state_dict(), tmp_path / "fcn.pth")
    with pytest.raises(TilepipeError, match="keys do not match deeplabv3_resnet50"):
        load_model(ModelSpec(architecture="deeplabv3_resnet50", weights=str(tmp_path / "fcn.pth")))
    with pytest.raises(TilepipeError, match="supports 16"):
        load_model(ModelSpec(architecture="lraspp_mobilenet_v3_large", weights="none", output_stride=8))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_stage_breakdown_sums_to_torchvisions_whole_count(name):
    with torch.device("meta"):
        oracle = torchvision_model(name, num_classes=21)
        ours = REGISTRY[name].make(21)
    stages = macs_by_stage(ours, REGISTRY[name].stages(ours), 256, 256, 3)
    assert "other" not in dict(stages)
    assert sum(m for _, m in stages) == flops_total(oracle, 256)
    labels = [s for s, _ in stages]
    assert labels[0] == "stem" and labels[-1] == "head"
    if "resnet" in name:
        assert labels == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


def test_plan_compare_agrees_with_torchvisions_published_gflops(sample):
    rows = tilepipe.plan(str(sample), tile_size=64, overlap=16, weights="none", compare=True)["compare"]
    assert {(r["architecture"], r["output_stride"]) for r in rows} == {
        (n, s) for n in ARCHITECTURES for s in REGISTRY[n].output_strides}
    published = {r["architecture"]: r["published"] for r in rows if "published" in r}
    assert set(published) == set(ARCHITECTURES)
    for name, figures in published.items():
        expected = getattr(segmentation, REGISTRY[name].weights.__name__).DEFAULT.meta["_ops"]
        assert figures["torchvision_gflops"] == expected
        assert figures["counted_gmacs"] == pytest.approx(expected, rel=0.05)
    row = next(r for r in rows if (r["architecture"], r["output_stride"]) == ("deeplabv3_resnet50", 8))
    with torch.device("meta"):
        oracle = flops_total(torchvision_model("deeplabv3_resnet50", num_classes=21), 64)
    assert row["gmacs_per_tile"] == pytest.approx(oracle / 1e9, abs=1e-3)
    # 64 px tiles, step 48, on 128 px: starts 0, 48 and (snapped to reach 128) 64, so 3 x 3 tiles
    assert row["tiles_computed"] == 9
    assert row["macs_per_image_pixel"] == round(oracle * 9 / (128 * 128))


def test_plan_compare_prints_a_row_per_architecture_and_stride(sample):
    from click.testing import CliRunner

    from tilepipe.cli import main

    result = CliRunner().invoke(main, ["plan", str(sample), "--compare", "--tile-size", "64", "--overlap", "16",
                                       "--weights", "none"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.split(" ")[0] in ARCHITECTURES]
    assert len(lines) == sum(len(REGISTRY[n].output_strides) for n in ARCHITECTURES)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.real_model
def test_cost_section_sentences_carry_a_figure_or_a_catalog_id(resnet101_summary):
    catalog = load_catalog()
    sentences = resnet101_summary["cost"]["sentences"]
    assert len(sentences) >= 8
    for s in sentences:
        assert re.search(r"\d", s["text"]) or s["refs"], s["text"]
        assert all(ref in catalog for ref in s["refs"])
        for ref in s["refs"]:
            if catalog[ref].kind == "paper":
                assert ref in s["quotes"], f"{ref} cited without the phrase of its entry: {s['text']}"
        for ref, phrase in s["quotes"].items():
            assert ref in s["refs"]
            facts = _normal(" ".join(f.text for f in catalog[ref].facts))
            assert _normal(phrase) in facts, f"{ref} does not hold {phrase!r}"
    cited = {ref for s in sentences for ref in s["refs"]}
    assert {"backbones-comparison-2406.05612", "resbuilder-2308.08504", "data-redundancy-2306.14113"} <= cited
    markdown = resnet101_summary.to_markdown()
    section = markdown.split("## Where the multiply-adds go")[1].split("\n## ")[0]
    for line in (ln for ln in section.splitlines() if ln.startswith("- ")):
        assert re.search(r"\d", line) or re.search(r"\[[a-z0-9.\-, ]+\]$", line)
    rows = re.findall(r"^\| (stem|layer\d|head) \| ([\d.]+) \|", section, re.M)
    assert [r[0] for r in rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    whole = float(re.search(r"\*\*whole model\*\* \| ([\d.]+)", section).group(1))
    assert sum(float(v) for _, v in rows) == pytest.approx(whole, abs=0.004)
