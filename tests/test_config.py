"""Where a run's options come from: defaults < model card < config file < ``options=``, keywords
and flags. A value the user gives wins even when it equals the default; the summary says where
each value came from. The oracle is the precedence rule itself, applied by hand to the values
written in each test."""

from __future__ import annotations

import pickle
from dataclasses import replace

import yaml

import tilepipe
from tests.conftest import smooth_image, write_geotiff
from tilepipe.config import resolve_settings

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


def test_options_record_the_names_given():
    assert tilepipe.RunOptions(tile_size=512, overlap=64).given == {"tile_size", "overlap"}
    assert tilepipe.RunOptions().given == frozenset()
    updated = tilepipe.RunOptions(tile_size=256).updated(overlap=64, bands=None)  # None: not given
    assert updated.given == {"tile_size", "overlap"}
    assert replace(tilepipe.RunOptions(tile_size=256), overlap=32).given == {"tile_size"}
    assert tilepipe.RunOptions(tile_size=512) == tilepipe.RunOptions()  # equal values are equal options


def test_options_pickle_with_the_names_given():
    options = tilepipe.RunOptions(tile_size=512, blending="crop", precision="fp32")
    copy = pickle.loads(pickle.dumps(options))
    assert copy == options and copy.given == {"tile_size", "blending", "precision"}
