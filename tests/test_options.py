"""Every run option is declared once, in :mod:`tilepipe.options`; the places that repeat it for
users (the README's options table, ``configs/satellite.yaml``, the command line and its help) must
not drift from that declaration. Each check reads the other place as a user would (the README's
markdown, the YAML text, ``--help``), not through tilepipe's own readers, and lists what drifted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tilepipe.cli import main
from tilepipe.options import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
CLI_ONLY = {"run": {"config", "explain", "output", "quiet", "verbose", "log_file"},
            "plan": {"config", "as_json", "compare", "preview", "preview_size"}}
"""Flags that are about the command, not the run: no option behind them."""
README_ONLY = {"explain"}
"""Rows of the README's table for flags of the command (``CLI_ONLY``)."""


def readme_rows(text: str) -> dict[str, list[str]]:
    """The README's options table: option name (``--tile-size`` -> ``tile_size``) -> its cells
    (flag, default, meaning), backticks dropped."""
    section = text.split("\n### Options\n", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `--"):
            cells = [cell.strip().replace("`", "") for cell in line.strip("|").split("|")]
            for name in re.findall(r"--([a-z-]+)", cells[0]):
                rows[name.replace("-", "_")] = cells
    return rows


def readme_drift(text: str) -> list[str]:
    rows = readme_rows(text)
    problems = [f"README: no row for {OPTIONS[n].flag}" for n in OPTIONS.keys() - rows.keys()]
    problems += [f"README: a row for --{n}, which is not an option" for n in rows.keys() - OPTIONS.keys() - README_ONLY]
    for name in OPTIONS.keys() & rows.keys():
        option, (_, default, meaning) = OPTIONS[name], rows[name]
        if default != option.shown_default:
            problems.append(f"README: {option.flag} default {default!r}, declared {option.shown_default!r}")
        problems += [f"README: {option.flag} does not mention {c!r}" for c in option.parser.choices
                     if not re.search(rf"\b{re.escape(c)}\b", meaning)]
    return problems


def satellite_drift(text: str) -> list[str]:
    """``configs/satellite.yaml`` sets every option, by its config key, to its default, and the
    comment beside an option with choices names them all."""
    values = yaml.safe_load(text)
    keys = {option.key: option for option in OPTIONS.values()}
    problems = [f"satellite.yaml: no key {k}" for k in keys.keys() - values.keys()]
    problems += [f"satellite.yaml: key {k} is not an option" for k in values.keys() - keys.keys()]
    for key in keys.keys() & values.keys():
        option, value = keys[key], values[key]
        if (option.default if value is None else option.read(value)) != option.default:
            problems.append(f"satellite.yaml: {key}: {value}, declared default {option.default}")
        line = next(line for line in text.splitlines() if line.startswith(f"{key}:"))
        problems += [f"satellite.yaml: {key}'s comment does not name {c!r}" for c in option.parser.choices
                     if not re.search(rf"#.*\b{re.escape(c)}\b", line)]
    return problems


def flags(command: str) -> set[str]:
    return {p.name for p in main.commands[command].params if p.param_type_name == "option"} - {"help"}


def squeezed(text: str) -> str:
    """Text without whitespace: click wraps help lines (and breaks after hyphens)."""
    return "".join(text.split())


def test_the_readme_table_matches_the_declaration():
    assert readme_drift((ROOT / "README.md").read_text()) == []


def test_the_satellite_config_holds_every_option_at_its_default():
    assert satellite_drift((ROOT / "configs" / "satellite.yaml").read_text()) == []


def test_run_has_a_flag_for_every_option_and_plan_for_every_option_not_only_of_run():
    assert flags("run") - CLI_ONLY["run"] == set(OPTIONS)
    assert flags("plan") - CLI_ONLY["plan"] == {n for n, o in OPTIONS.items() if not o.run_only}
    assert {n for n, o in OPTIONS.items() if o.run_only} == {"probabilities", "overwrite", "resume"}


def test_run_help_shows_every_option_its_help_default_and_choices():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    text = squeezed(result.output)
    for option in OPTIONS.values():
        assert squeezed(option.flag + " ") in text and squeezed(option.help) in text, option.name
        if option.shown_default and not option.parser.switch:
            assert squeezed(f"[default: {option.shown_default}]") in text, option.name
        if option.parser.choices:
            assert f"[{'|'.join(option.parser.choices)}]" in text, option.name


DRIFTS = [  # (check, file, text in it, drifted text, what the check must say)
    (readme_drift, "README.md", "| `--overlap` |", "| `--overlapp` |",
     ["README: no row for --overlap", "README: a row for --overlapp, which is not an option"]),
    (readme_drift, "README.md", "| `--tile-size` | 512 |", "| `--tile-size` | 640 |",
     ["README: --tile-size default '640', declared '512'"]),
    (readme_drift, "README.md", "or `crop` (nearest", "or cropped (nearest",
     ["README: --blending does not mention 'crop'"]),
    (satellite_drift, "configs/satellite.yaml", "tile-size: 512", "tile-size: 640",
     ["satellite.yaml: tile-size: 640, declared default 512"]),
    (satellite_drift, "configs/satellite.yaml", "tile-size:", "tile-sise:",
     ["satellite.yaml: no key tile-size", "satellite.yaml: key tile-sise is not an option"]),
    (satellite_drift, "configs/satellite.yaml", "blending: gaussian ", "blending: crop     ",
     ["satellite.yaml: blending: crop, declared default gaussian"]),
    (satellite_drift, "configs/satellite.yaml", "# gaussian | crop", "# gaussian",
     ["satellite.yaml: blending's comment does not name 'crop'"]),
]


@pytest.mark.parametrize("check, name, text, drifted, problems", DRIFTS, ids=[d[3] for d in DRIFTS])
def test_the_checks_fail_when_a_copy_drifts(check, name, text, drifted, problems):
    """The checks above can fail: a README row or default, a YAML key, value or comment that drifted is caught."""
    original = (ROOT / name).read_text()
    assert text in original
    assert check(original.replace(text, drifted)) == problems


def test_the_model_option_names_every_architecture_of_the_registry():
    """``--model``'s names live in the model registry (reading it imports torch, which ``--help``
    does not), so its help and its README row are held to the registry here."""
    from tilepipe.model import REGISTRY

    row = " ".join(readme_rows((ROOT / "README.md").read_text())["model"])
    for name in REGISTRY:
        assert re.search(rf"\b{name}\b", OPTIONS["model"].help), name
        assert re.search(rf"\b{name}\b", row), name
