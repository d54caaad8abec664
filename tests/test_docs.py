"""The README is the first day's page and the documentation site holds the rest: the README stays
short, starts with the two set-up commands that CI runs, and every link in it reaches a file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def setup_commands(markdown: str) -> list[str]:
    """The lines of the first ``bash`` code block."""
    return markdown.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()


def test_the_readme_is_at_most_300_lines():
    assert len(README.splitlines()) <= 300


def test_the_readme_opens_with_the_two_set_up_commands_and_ci_runs_the_second():
    first, second = setup_commands(README)
    assert README.index("```bash") < README.index("\n## ")
    assert first.endswith("pip install -e . && tilepipe run sample_data/rmnp-rgb.tif -o rmnp_mask.zarr "
                          "--weights none --overwrite --explain")
    assert "mkdocs build --strict" in second and second.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == second
    assert setup_commands((ROOT / "docs" / "install.md").read_text()) == [first, second]


def test_every_relative_link_of_the_readme_reaches_a_file():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into docs/"
    assert [t for t in local if not (ROOT / t).is_file()] == []
