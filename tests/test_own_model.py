"""Bring your own model: a 4-band checkpoint made with torchvision's builder, a model card, the
precedence default < card < config < flag, and clear errors for a band count that does not fit."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import yaml
import zarr
from click.testing import CliRunner
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

import tilepipe
from tests.conftest import shared_file, smooth_image, write_geotiff
from tilepipe.cli import main
from tilepipe.errors import TilepipeError

LOW, HIGH = [10.0, 20.0, 30.0, 0.0], [200.0, 210.0, 220.0, 255.0]
CLASSES = [{"name": "water", "colour": "#1f78b4"}, {"name": "forest", "colour": [51, 160, 44]},
           {"name": "field", "colour": [255, 255, 0]}]


def four_band_model() -> torch.nn.Module:
    """torchvision's LR-ASPP MobileNetV3 with its first convolution widened to 4 input bands."""
    torch.manual_seed(3)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(CLASSES))
    model.backbone["0"][0] = torch.nn.Conv2d(4, 16, 3, stride=2, padding=1, bias=False)
    return model.eval()


@pytest.fixture(scope="module")
def landcover(tmp_path_factory):
    """``landcover.pt`` (4-band checkpoint) with ``landcover.yaml`` beside it; returns (path, model)."""
    folder = tmp_path_factory.mktemp("own")
    model = four_band_model()
    torch.save(model.state_dict(), folder / "landcover.pt")
    card = {"name": "landcover-rgbn", "architecture": "lraspp_mobilenet_v3_large", "bands": [1, 2, 3, 4],
            "scaling": {"low": LOW, "high": HIGH}, "classes": CLASSES, "tile_size": 800,
            "provenance": {"trained_on": "nothing (test weights)", "by": "tests/test_own_model.py"}}
    (folder / "landcover.yaml").write_text(yaml.safe_dump(card))
    return folder / "landcover.pt", model


def test_four_band_geotiff_with_card_runs_end_to_end(landcover, tmp_path):
    """The whole RGBA scene in one tile (card tile size 800): the mask must equal the 4-band model
    applied in this test to the card-scaled image, wherever the alpha band says the data is valid."""
    ckpt, model = landcover
    path = shared_file("geotiff", "RGBA.byte.tif")
    summary = tilepipe.run(str(path), str(tmp_path / "m.zarr"), weights=str(ckpt), workers=1)
    scaling = summary["input"]["scaling"]
    assert scaling["low"] == LOW and scaling["high"] == HIGH and scaling["method"] == "model card (low/high)"
    assert summary["model"]["in_channels"] == 4 and summary["model"]["architecture"] == "lraspp_mobilenet_v3_large"
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    assert group.attrs["class_names"] == ["water", "forest", "field"]
    assert group.attrs["class_colours"] == [[31, 120, 180], [51, 160, 44], [255, 255, 0]]

    with rasterio.open(path) as src:
        raw = src.read().astype(np.float32)
        valid = src.dataset_mask() > 0
    low, high = np.array(LOW)[:, None, None], np.array(HIGH)[:, None, None]
    x = np.clip((raw - low) / (high - low), 0, 1) * valid  # invalid pixels enter as zeros
    padded = np.zeros((4, 720, 800), np.float32)  # the tile: sides rounded up to the stride 16
    padded[:, :718, :791] = x
    with torch.no_grad():
        expected = model(torch.from_numpy(padded)[None])["out"][0].argmax(0).numpy()[:718, :791]
    mask = group["mask"][...]
    assert (mask[~valid] == 255).all()
    assert (mask[valid] == expected[valid]).mean() > 0.999


def test_uint16_rgba_with_a_mean_std_card(landcover, tmp_path):
    ckpt, _ = landcover
    card = tmp_path / "card.json"
    mean, std = [300.0, 310.0, 320.0, 1000.0], [50.0, 60.0, 70.0, 500.0]
    card.write_text(f'{{"scaling": {{"mean": {mean}, "std": {std}}}, "bands": [1, 2, 3, 4]}}')
    summary = tilepipe.run(str(shared_file("geotiff", "RGBA.uint16.tif")), str(tmp_path / "m.zarr"),
                           model="lraspp_mobilenet_v3_large", weights=str(ckpt), model_card=str(card),
                           tile_size=256, workers=1)
    scaling = summary["input"]["scaling"]
    assert scaling["method"] == "model card (mean/std)" and not scaling["clip"]
    assert scaling["low"] == mean and scaling["high"] == [m + s for m, s in zip(mean, std)]
    assert summary["model"]["card_file"]["scaling"] == {"mean": mean, "std": std}
    assert summary["settings"]["scaling"]["from"] == "card"
    assert tilepipe.open(str(tmp_path / "m.zarr")).is_complete


def test_wrong_band_count_is_one_clear_error_naming_both_numbers(landcover, tmp_path):
    ckpt, _ = landcover
    path = shared_file("geotiff", "RGBA.byte.tif")
    with pytest.raises(TilepipeError, match=r"gives 3 band\(s\) but the model .* takes 4 input channels"):
        tilepipe.run(str(path), str(tmp_path / "m.zarr"), weights=str(ckpt), bands=(1, 2, 3), scaling="0,255")
    assert not (tmp_path / "m.zarr").exists()
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "c.zarr"), "--weights", str(ckpt),
                                       "--bands", "1,2", "--scaling", "0,255"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "gives 2 band(s)" in result.output and "takes 4 input channels" in result.output
    assert not (tmp_path / "c.zarr").exists()


def test_card_with_scaling_for_another_band_count_is_a_clear_error(landcover, tmp_path):
    ckpt, _ = landcover
    card = tmp_path / "three.yaml"
    card.write_text(yaml.safe_dump({"scaling": {"low": [0, 0, 0], "high": [1, 1, 1]}}))
    with pytest.raises(TilepipeError, match="gives scaling for 3 band"):
        tilepipe.plan(str(shared_file("geotiff", "RGBA.byte.tif")), weights=str(ckpt), model_card=str(card),
                      model="lraspp_mobilenet_v3_large", bands=(1, 2, 3, 4))


@pytest.mark.parametrize("text, problem", [
    ("colour: red", "unknown model card key"),
    ("scaling: {low: [0], mean: [1]}", "either low and high, or mean and std"),
    ("scaling: {low: [5], high: [1]}", "greater than its low"),
    ("classes: [{name: a, colour: '#zz0000'}]", "expected '#rrggbb'"),
    ("tile_size: -3", "positive integer"),
    ("[1, 2]", "a mapping of keys"),
])
def test_bad_cards_are_one_line_naming_the_file(tmp_path, problem, text):
    card = tmp_path / "bad.yaml"
    card.write_text(text)
    image = write_geotiff(tmp_path / "a.tif", smooth_image(32, 32))
    with pytest.raises(TilepipeError) as err:
        tilepipe.plan(str(image), model="standin", weights="none", model_card=str(card))
    assert problem in str(err.value) and str(card) in str(err.value) and "\n" not in str(err.value)


def test_precedence_default_card_config_flag_each_visible_in_the_summary(tmp_path):
    """tile_size: 512 by default, 96 from the card, 128 from the config file, 64 from the flag;
    class names from the card unless a flag gives them."""
    image = write_geotiff(tmp_path / "a.tif", smooth_image(96, 96))
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"tile_size": 96, "classes": ["a", "b", "c", "d"], "provenance": "test"}))
    config = tmp_path / "run.yaml"
    config.write_text("tile-size: 128\nbands: null\n")
    common = dict(model="standin", weights="none", overlap=16, chunk_size=128, block_size=128, workers=1)
    cases = [({}, 512, "default"), ({"model_card": str(card)}, 96, "card"),
             ({"model_card": str(card), "config": str(config)}, 128, "config"),
             ({"model_card": str(card), "config": str(config), "tile_size": 64}, 64, "flag")]
    for i, (extra, tile, origin) in enumerate(cases):
        summary = tilepipe.run(str(image), str(tmp_path / f"m{i}.zarr"), **common, **extra)
        setting = summary["settings"]["tile_size"]
        assert (setting["value"], setting["from"]) == (tile, origin)
        assert f"| tile_size | {tile} | {origin} |" in summary.to_markdown()
        names = summary["settings"]["class_names"]
        assert names["from"] == ("card" if extra else "default")
        assert summary["settings"]["bands"]["from"] == "default"  # a null in the config file sets nothing
    summary = tilepipe.run(str(image), str(tmp_path / "f.zarr"), **common, model_card=str(card),
                           class_names="w,x,y,z")
    assert summary["settings"]["class_names"] == {"value": ["w", "x", "y", "z"], "from": "flag"}
    assert summary["model"]["card_file"]["provenance"] == "test"


def test_card_beside_the_checkpoint_is_found(landcover, tmp_path):
    ckpt, _ = landcover
    info = tilepipe.plan(str(shared_file("geotiff", "RGBA.byte.tif")), weights=str(ckpt))
    assert info["model"]["architecture"] == "lraspp_mobilenet_v3_large"  # from the card beside landcover.pt
    assert info["input"]["bands_used"] == [1, 2, 3, 4] and info["model"]["in_channels"] == 4
    assert info["tile"] == [720, 800]


def test_random_weights_take_the_band_count(tmp_path):
    """No checkpoint: the network is built for the bands selected (five here); one band still
    feeds three channels."""
    image = write_geotiff(tmp_path / "five.tif", smooth_image(48, 48, bands=5))
    summary = tilepipe.run(str(image), str(tmp_path / "m.zarr"), model="standin", weights="none",
                           bands="1,2,3,4,5", workers=1)
    assert summary["model"]["in_channels"] == 5
    summary = tilepipe.run(str(image), str(tmp_path / "one.zarr"), model="standin", weights="none", bands="2",
                           workers=1)
    assert summary["model"]["in_channels"] == 3


@pytest.mark.parametrize("clip", [True, False])
def test_raw_tiles_scaled_by_the_engine_match_the_host_scaling(clip):
    """The path a GPU takes (raw tiles, the engine scales them) gives what the host path gives,
    for a card's low/high (clipped) and mean/std (not clipped, values beyond [0, 1] kept)."""
    from tilepipe.engine import Engine, EngineOptions
    from tilepipe.model import ModelSpec, load_model
    from tilepipe.sources.scaling import IntensityScaling

    low, high = (10.0, 20.0, 0.0, 5.0), (60.0, 40.0, 255.0, 9.0)
    scaling = IntensityScaling("model card", low, high, "card", clip)
    engine = Engine(load_model(ModelSpec(architecture="standin", weights="none", bands=4, normalise=False)),
                    EngineOptions(device="cpu"))
    raw = np.random.default_rng(0).integers(0, 256, (2, 4, 24, 24)).astype(np.uint8)
    valid = np.ones((2, 24, 24), bool)
    lo, hi = np.array(low)[:, None, None], np.array(high)[:, None, None]
    scaled = (raw - lo) / (hi - lo)  # the card's window by its definition, made here
    scaled = (np.clip(scaled, 0, 1) if clip else scaled).astype(np.float32)
    on_device, _ = engine.predict(engine.upload(raw, valid, scaling))
    on_host, _ = engine.predict(engine.upload(scaled, valid))
    torch.testing.assert_close(on_device, on_host)
    assert np.allclose(scaling.apply(raw), scaled) and (scaled.max() > 1.0) == (not clip)
