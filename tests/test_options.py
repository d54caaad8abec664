"""Every run option is declared once, in :class:`tilepipe.RunOptions`; the places that repeat it for
users (the README's options table, ``configs/satellite.yaml``, the command line) must not drift
from that declaration. Each check reads the other place as a user would, not through tilepipe."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import tilepipe
from tilepipe.cli import main
from tilepipe.config import option_fields

ROOT = Path(__file__).resolve().parents[1]
DECLARED = {f.name: f.default for f in option_fields()}
CLI_ONLY = {"explain", "config"}
"""Flags of ``tilepipe run`` that are about the command, not the run: no option behind them."""


def readme_options_table(text: str) -> set[str]:
    """Option names (``--tile-size`` -> ``tile_size``) in the first column of the README's table."""
    section = text.split("\n### Options\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    return {name.replace("-", "_") for row in rows for name in re.findall(r"`--([a-z-]+)`", row.split("|")[1])}


def yaml_options(text: str) -> dict:
    return {str(k).replace("-", "_"): v for k, v in yaml.safe_load(text).items()}


def cli_options() -> set[str]:
    run = main.commands["run"]
    return {p.name for p in run.params if p.param_type_name == "option"} - {"output", "quiet", "verbose", "log_file"}


def test_the_readme_table_documents_every_option_and_no_other():
    documented = readme_options_table((ROOT / "README.md").read_text())
    assert documented - CLI_ONLY == set(DECLARED)


def test_the_satellite_config_holds_every_option_at_its_default():
    config = yaml_options((ROOT / "configs" / "satellite.yaml").read_text())
    assert set(config) == set(DECLARED)
    for name, value in config.items():
        if value is not None:  # None is "not given" in a config file
            assert tilepipe.RunOptions().updated(**{name: value}) == tilepipe.RunOptions(), name


def test_the_command_line_has_a_flag_for_every_option():
    assert cli_options() - CLI_ONLY == set(DECLARED)


def test_the_checks_fail_when_a_copy_drifts():
    """The checks above can fail: a README row or a YAML value that drifted is caught."""
    readme = (ROOT / "README.md").read_text()
    dropped = readme.replace("| `--overlap` |", "| `--overlapp` |")
    assert readme_options_table(dropped) - CLI_ONLY != set(DECLARED)
    config = (ROOT / "configs" / "satellite.yaml").read_text().replace("tile-size: 512", "tile-size: 640")
    drifted = yaml_options(config)
    assert tilepipe.RunOptions().updated(tile_size=drifted["tile_size"]) != tilepipe.RunOptions()
