"""Every run option is declared once, in :mod:`tilepipe.options`; the places that repeat it for
users (the documentation's options table, ``configs/satellite.yaml``, the command line and its
help) must not drift from that declaration. The table is written from the declaration when the
documentation is built (``docs/hooks/options_table.py``); the checks read each place as a user
would (the table's markdown, the YAML text, ``--help``), not through tilepipe's own readers, and
list what drifted."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tilepipe.cli import main
from tilepipe.options import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
OPTIONS_PAGE = ROOT / "docs" / "reference" / "options.md"
CLI_ONLY = {"run": {"config", "explain", "output", "quiet", "verbose", "log_file"},
            "plan": {"config", "as_json", "compare", "preview", "preview_size"}}
"""Flags that are about the command, not the run: no option behind them."""


def docs_hook():
    """The MkDocs hook that writes the options table, loaded from its file as MkDocs loads it."""
    spec = importlib.util.spec_from_file_location("options_table", ROOT / "docs" / "hooks" / "options_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def built_options_page() -> str:
    """``docs/reference/options.md`` as the documentation build renders it (the hook applied)."""
    return docs_hook().on_page_markdown(OPTIONS_PAGE.read_text(), page=None)


def table_rows(text: str) -> dict[str, list[str]]:
    """The options table of the page: option name (``--tile-size`` -> ``tile_size``) -> its cells
    (flag, config key, default, meaning, choices, commands), backticks dropped."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `--"):
            cells = [cell.strip().replace("`", "") for cell in line.strip().strip("|").split(" | ")]
            for name in re.findall(r"--([a-z-]+)", cells[0]):
                rows[name.replace("-", "_")] = cells
    return rows


def table_drift(text: str) -> list[str]:
    rows = table_rows(text)
    problems = [f"no row for {OPTIONS[n].flag}" for n in sorted(OPTIONS.keys() - rows.keys())]
    problems += [f"a row for --{n}, which is not an option" for n in sorted(rows.keys() - OPTIONS.keys())]
    for name in sorted(OPTIONS.keys() & rows.keys()):
        option, (_, key, default, meaning, choices, commands) = OPTIONS[name], rows[name]
        if default != option.shown_default:
            problems.append(f"{option.flag} default {default!r}, declared {option.shown_default!r}")
        if key != name.replace("_", "-"):
            problems.append(f"{option.flag} config key {key!r}")
        problems += [f"{option.flag} does not mention {c!r}" for c in option.parser.choices
                     if not re.search(rf"\b{re.escape(c)}\b", f"{meaning} {choices}")]
        if commands != ("run" if option.run_only else "run, plan"):
            problems.append(f"{option.flag} commands {commands!r}")
    return problems


def satellite_drift(text: str) -> list[str]:
    """``configs/satellite.yaml`` sets every option, by its config key, to its default, and the
    comment beside an option with choices names them all."""
    values = yaml.safe_load(text)
    keys = {option.key: option for option in OPTIONS.values()}
    problems = [f"no key {k}" for k in sorted(keys.keys() - values.keys())]
    problems += [f"key {k} is not an option" for k in sorted(values.keys() - keys.keys())]
    for key in sorted(keys.keys() & values.keys()):
        option, value = keys[key], values[key]
        if (option.default if value is None else option.read(value)) != option.default:
            problems.append(f"{key}: {value}, declared default {option.default}")
        line = next(line for line in text.splitlines() if line.startswith(f"{key}:"))
        problems += [f"{key}'s comment does not name {c!r}" for c in option.parser.choices
                     if not re.search(rf"#.*\b{re.escape(c)}\b", line)]
    return problems


def flags(command: str) -> set[str]:
    return {p.name for p in main.commands[command].params if p.param_type_name == "option"} - {"help"}


def squeezed(text: str) -> str:
    """Text without whitespace: click wraps help lines (and breaks after hyphens)."""
    return "".join(text.split())


def test_the_options_page_is_built_with_the_table_made_from_the_declaration():
    page = OPTIONS_PAGE.read_text()
    assert docs_hook().MARKER in page and "| `--" not in page  # no hand-written row beside it
    assert table_drift(built_options_page()) == []


def test_the_options_page_names_only_flags_that_exist():
    """The notes below the table are written by hand: every flag they name is an option or a
    flag of ``tilepipe run`` or ``tilepipe plan``."""
    known = {o.flag for o in OPTIONS.values()} | {"--help"}
    for command in ("run", "plan"):
        known |= {flag for p in main.commands[command].params for flag in p.opts if flag.startswith("--")}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", OPTIONS_PAGE.read_text()))
    assert named - known == set()


def test_the_satellite_config_holds_every_option_at_its_default():
    assert satellite_drift((ROOT / "configs" / "satellite.yaml").read_text()) == []


def test_run_has_a_flag_for_every_option_and_plan_for_every_option_not_only_of_run():
    assert flags("run") - CLI_ONLY["run"] == set(OPTIONS)
    assert flags("plan") - CLI_ONLY["plan"] == {n for n, o in OPTIONS.items() if not o.run_only}
    assert {n for n, o in OPTIONS.items() if o.run_only} == {"probabilities", "overwrite", "resume", "all_series"}


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


TABLE_DRIFTS = [  # (text in the built table, drifted text, what table_drift says)
    ("| `--overlap` |", "| `--overlapp` |", ["no row for --overlap", "a row for --overlapp, which is not an option"]),
    ("| `tile-size` | `512` |", "| `tile-size` | `640` |", ["--tile-size default '640', declared '512'"]),
    ("`gaussian`, `crop`", "`gaussian`, `cropped`", ["--blending does not mention 'crop'"]),
]
SATELLITE_DRIFTS = [  # (text in configs/satellite.yaml, drifted text, what satellite_drift says)
    ("tile-size: 512", "tile-size: 640", ["tile-size: 640, declared default 512"]),
    ("tile-size:", "tile-sise:", ["no key tile-size", "key tile-sise is not an option"]),
    ("blending: gaussian ", "blending: crop     ", ["blending: crop, declared default gaussian"]),
    ("# gaussian | crop", "# gaussian", ["blending's comment does not name 'crop'"]),
]
DRIFTS = ([(table_drift, built_options_page, *case) for case in TABLE_DRIFTS]
          + [(satellite_drift, (ROOT / "configs" / "satellite.yaml").read_text, *case) for case in SATELLITE_DRIFTS])


@pytest.mark.parametrize("check, read, text, drifted, problems", DRIFTS, ids=[d[3] for d in DRIFTS])
def test_the_checks_fail_when_a_copy_drifts(check, read, text, drifted, problems):
    """The checks above can fail: a table row or default, a YAML key, value or comment that drifted is caught."""
    original = read()
    assert text in original
    assert check(original.replace(text, drifted)) == problems


def test_the_model_option_names_every_architecture_of_the_registry():
    """``--model``'s names live in the model registry (reading it imports torch, which ``--help``
    does not), so its help and its row of the options table are held to the registry here."""
    from tilepipe.model import REGISTRY

    row = " ".join(table_rows(built_options_page())["model"])
    for name in REGISTRY:
        assert re.search(rf"\b{name}\b", OPTIONS["model"].help), name
        assert re.search(rf"\b{name}\b", row), name
