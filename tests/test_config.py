"""Where a run's options come from: defaults < model card < config file < ``options=``, keywords
and flags. A value the user gives wins even when it equals the default; the summary says where
each value came from. The oracle is the precedence rule itself, applied by hand to the values
written in each test."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import tilepipe
from tests.conftest import smooth_image, write_geotiff
from tilepipe.cli import main
from tilepipe.config import load_options, resolve_settings

STANDIN = dict(model="standin", weights="none")


def config_file(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_an_options_value_equal_to_the_default_overrides_the_config_file(tmp_path):
    config = config_file(tmp_path, "tile-size: 256\nblending: crop\noverlap: 32\n")
    settings = resolve_settings(config, tilepipe.RunOptions(tile_size=512, blending="gaussian"))
    assert settings.options.tile_size == 512 and settings.origins["tile_size"] == "flag"
    assert settings.options.blending == "gaussian" and settings.origins["blending"] == "flag"
    assert settings.options.overlap == 32 and settings.origins["overlap"] == "config"  # not given: the file's
    assert settings.options.chunk_size == 512 and settings.origins["chunk_size"] == "default"


def test_a_keyword_equal_to_the_default_overrides_the_config_file(tmp_path):
    config = config_file(tmp_path, "tile-size: 256\n")
    settings = resolve_settings(config, tile_size=512)
    assert (settings.options.tile_size, settings.origins["tile_size"]) == (512, "flag")


def test_keywords_win_over_options(tmp_path):
    settings = resolve_settings(None, tilepipe.RunOptions(tile_size=256, overlap=32), tile_size=128)
    assert (settings.options.tile_size, settings.options.overlap) == (128, 32)


def test_an_options_value_equal_to_the_default_overrides_the_model_card(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"tile_size": 96}))
    settings = resolve_settings(None, tilepipe.RunOptions(tile_size=512, model_card=str(card)))
    assert (settings.options.tile_size, settings.origins["tile_size"]) == (512, "flag")
    settings = resolve_settings(None, tilepipe.RunOptions(model_card=str(card)))
    assert (settings.options.tile_size, settings.origins["tile_size"]) == (96, "card")


def test_plan_takes_options_equal_to_the_default_over_the_config_file(tmp_path):
    image = write_geotiff(tmp_path / "a.tif", smooth_image(600, 700))
    config = config_file(tmp_path, "tile-size: 256\n")
    info = tilepipe.plan(str(image), config=str(config), options=tilepipe.RunOptions(tile_size=512, **STANDIN))
    assert info["tile"] == [512, 512]
    assert tilepipe.plan(str(image), config=str(config), **STANDIN)["tile"] == [256, 256]


def test_run_takes_options_equal_to_the_default_over_the_config_file(tmp_path):
    image = write_geotiff(tmp_path / "a.tif", smooth_image(96, 96))
    config = config_file(tmp_path, "tile-size: 64\noverlap: 16\nchunk-size: 128\nblock-size: 128\n")
    options = tilepipe.RunOptions(tile_size=512, workers=1, **STANDIN)
    summary = tilepipe.run(str(image), str(tmp_path / "m.zarr"), options, config=str(config))
    assert summary["settings"]["tile_size"] == {"value": 512, "from": "flag"}


def test_a_flag_equal_to_the_default_overrides_the_config_file(tmp_path):
    image = write_geotiff(tmp_path / "a.tif", smooth_image(600, 700))
    config = config_file(tmp_path, "tile-size: 256\n")
    args = ["plan", str(image), "--config", str(config), "--model", "standin", "--weights", "none", "--json"]
    assert json.loads(CliRunner().invoke(main, args).output)["tile"] == [256, 256]
    assert json.loads(CliRunner().invoke(main, [*args, "--tile-size", "512"]).output)["tile"] == [512, 512]


def test_flags_are_read_by_the_declared_parsers(tmp_path):
    """Flags arrive as text: ``--output-stride 16`` and ``--bands 3,2,1`` reach the plan as a stride
    and band numbers."""
    image = write_geotiff(tmp_path / "a.tif", smooth_image(64, 64))
    args = ["plan", str(image), "--weights", "none", "--output-stride", "16", "--bands", "3,2,1", "--json"]
    info = json.loads(CliRunner().invoke(main, args).output)
    assert info["output_stride"] == 16 and info["input"]["bands_used"] == [3, 2, 1]


def test_a_config_file_with_an_unknown_key_is_one_line_naming_the_file_and_the_key(tmp_path):
    config = config_file(tmp_path, "tile-size: 256\ntile_sise: 512\n")
    with pytest.raises(tilepipe.TilepipeError) as err:
        resolve_settings(config)
    assert str(config) in str(err.value) and "tile_sise" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, fragments", [
    ("blending: soft\n", ("blending soft", "gaussian, crop")),
    ("precision: fp64\n", ("precision fp64", "auto, fp32, bf16, fp16")),
    ("output-stride: 32\n", ("output-stride 32", "8, 16")),
    ("tile_size: big\n", ("tile_size big", "a positive integer")),
    ("overlap: -8\n", ("overlap -8", "an integer >= 0")),
    ("batch-size: 0\n", ("batch-size 0", "a positive integer or auto")),
    ("percentiles: [98, 2]\n", ("percentiles [98, 2]", "0 <= LOW < HIGH <= 100")),
    ("bands: [3, x]\n", ("bands [3, 'x']", "band numbers")),
    ("compile: maybe\n", ("compile maybe", "true or false")),
    ("scaling: bright\n", ("scaling 'bright'", "LOW,HIGH")),  # the grammars of sources/ say what they accept
    ("window: wide\n", ("window 'wide'", "CENTER,WIDTH", "lung")),
    ("select: EchoNumbers\n", ("select 'EchoNumbers'", "KEY=VALUE")),
    ("model: unet\n", ("model 'unet'", "deeplabv3_resnet101", "standin")),
    ("device: gpu\n", ("device 'gpu'", "cuda:N")),
    ("cluster: locl:2\n", ("cluster 'locl:2'", "local:N")),
])
def test_a_bad_value_in_a_config_file_is_one_line_naming_the_file_the_key_and_what_it_accepts(tmp_path, text,
                                                                                               fragments):
    config = config_file(tmp_path, text)
    with pytest.raises(tilepipe.TilepipeError) as err:
        load_options(config)
    message = str(err.value)
    assert message.startswith(f"{config}: ") and "\n" not in message and "--" not in message  # the key, not a flag
    for fragment in fragments:
        assert fragment in message


def test_the_command_line_says_the_same_about_a_bad_value_in_its_config_file(tmp_path):
    image = write_geotiff(tmp_path / "a.tif", smooth_image(64, 64))
    config = config_file(tmp_path, "blending: soft\n")
    result = CliRunner().invoke(main, ["plan", str(image), "--config", str(config)])
    assert result.exit_code != 0
    assert result.output.strip() == f"Error: {config}: blending soft: expected one of gaussian, crop"


def test_config_values_are_read_as_the_declaration_says(tmp_path):
    config = config_file(tmp_path, "bands: 3,2,1\npercentiles: [1, 99]\nclass-names: [a, b]\noutput-stride: 16\n"
                                   "blending: crop\nbatch-size: auto\nworkers: 2\nscaling: null\n")
    options = load_options(config)
    assert (options.bands, options.percentiles, options.class_names) == ((3, 2, 1), (1.0, 99.0), ("a", "b"))
    assert (options.output_stride, options.blending, options.batch_size, options.workers) == (16, "crop", "auto", 2)
    assert options.scaling == "auto" and options.given == {"bands", "percentiles", "class_names", "output_stride",
                                                            "blending", "batch_size", "workers"}
    stored = json.loads(json.dumps(options.to_json()))  # what the store's attributes hold: plain values
    assert stored["blending"] == "crop" and type(options.to_json()["blending"]) is str
    assert stored["output_stride"] == 16 and type(options.to_json()["output_stride"]) is int


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_file_loads(path):
    written = {str(k).replace("-", "_") for k, v in yaml.safe_load(path.read_text()).items() if v is not None}
    assert load_options(path).given == written


def test_options_record_the_names_given():
    assert tilepipe.RunOptions(tile_size=512, overlap=64).given == {"tile_size", "overlap"}
    assert tilepipe.RunOptions().given == frozenset()
    updated = tilepipe.RunOptions(tile_size=256).updated(overlap=64, bands=None)  # None: not given
    assert updated.given == {"tile_size", "overlap"}
    assert replace(tilepipe.RunOptions(tile_size=256), overlap=32).given == {"tile_size", "overlap"}
    assert tilepipe.RunOptions(tile_size=512) == tilepipe.RunOptions()  # equal values are equal options


def test_options_pickle_with_the_names_given():
    options = tilepipe.RunOptions(tile_size=512, blending="crop", precision="fp32")
    copy = pickle.loads(pickle.dumps(options))
    assert copy == options and copy.given == {"tile_size", "blending", "precision"}


def test_a_replaced_copy_keeps_the_values_it_was_given(tmp_path):
    """``dataclasses.replace`` is how frozen options are usually changed: its values are given."""
    config = config_file(tmp_path, "tile-size: 384\n")
    options = replace(tilepipe.RunOptions(), tile_size=256, blending="crop")
    settings = resolve_settings(config, options)
    assert (settings.options.tile_size, settings.origins["tile_size"]) == (256, "flag")
    assert (settings.options.blending, settings.origins["blending"]) == ("crop", "flag")
    assert settings.origins["overlap"] == "default"


def test_python_values_read_as_their_plain_equivalents(tmp_path):
    import numpy as np

    options = tilepipe.RunOptions(weights=tmp_path / "w.pt", model_card=tmp_path / "c.yaml",
                                  bands=np.array([3, 2, 1]), percentiles=np.array([1.0, 99.0]),
                                  class_names=("a", "b"), compile=np.bool_(True))
    assert options.weights == str(tmp_path / "w.pt") and options.model_card == str(tmp_path / "c.yaml")
    assert options.bands == (3, 2, 1) and options.percentiles == (1.0, 99.0) and options.compile is True
    assert tilepipe.RunOptions(bands=range(1, 4)).bands == (1, 2, 3)


@pytest.mark.parametrize("text, fragments", [
    ("output_stride: 32\n", ("output_stride 32", "8, 16")),
    ("architecture: bogus\n", ("architecture", "bogus", "deeplabv3_resnet101")),
])
def test_a_bad_value_in_a_model_card_names_the_card_not_a_flag(tmp_path, text, fragments):
    card = tmp_path / "card.yaml"
    card.write_text(text)
    with pytest.raises(tilepipe.TilepipeError) as err:
        resolve_settings(None, model_card=str(card))
    message = str(err.value)
    assert message.startswith(f"{card}: ") and "--" not in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("args", [("--tile-size", "abc"), ("--num-classes", "0"), ("--bands", "x"),
                                  ("--blending", "soft")])
def test_a_bad_flag_value_is_a_usage_error_like_a_bad_choice(tmp_path, args):
    src = write_geotiff(tmp_path / "s.tif", smooth_image(64, 64))
    result = CliRunner().invoke(main, ["plan", str(src), *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and args[0] in result.output and args[1] in result.output


def test_a_gpu_config_plans_on_a_machine_without_cuda(tmp_path):
    """Planning needs no device: ``--device cuda`` with ``--workers auto`` sizes the plan for a
    GPU machine instead of failing here (the engine, not the plan, refuses a missing GPU)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    src = write_geotiff(tmp_path / "s.tif", smooth_image(64, 64))
    info = tilepipe.plan(str(src), model="standin", weights="none", device="cuda")
    assert info["blocks"] == 1
