"""The reference catalog: the shipped entries are valid, and broken catalogs are rejected by name."""

from pathlib import Path

import pytest

from tilepipe.report.catalog import (
    KINDS,
    Entry,
    Fact,
    catalog_dir,
    format_entry,
    format_listing,
    load_catalog,
)
from tilepipe.errors import TilepipeError

REQUIRED_IDS = {
    "deeplabv3plus-pytorch",
    "torchvision-deeplabv3-resnet101-coco-voc",
    "torchvision-deeplabv3-model",
    "backbones-comparison-2406.05612",
    "data-redundancy-2306.14113",
    "resbuilder-2308.08504",
    "deeplabv3-paper",
    "resnet-paper",
    "monai-sliding-window",
    "nnunet-gaussian",
    "tactic-lazy-windowed-reads",
    "tactic-halo-blending",
    "tactic-tile-batching",
    "tactic-mixed-precision",
    "tactic-channels-last",
    "tactic-cudnn-autotune",
    "tactic-pinned-memory",
    "tactic-overlap-io-compute",
    "tactic-skip-nodata",
    "tactic-output-stride",
    "tactic-dask-block-parallelism",
    "tactic-chunk-aligned-writes",
    "tactic-compile",
}

VALID_ENTRY = """\
id: {id}
title: "A valid entry"
kind: paper
links:
  arxiv: https://arxiv.org/abs/0000.00000
facts:
  - text: "Something the paper says."
    source: "arXiv 0000.00000, Sec. 1"
"""


@pytest.fixture(scope="module")
def catalog() -> dict[str, Entry]:
    return load_catalog()


def test_default_catalog_is_the_checkout_folder():
    assert catalog_dir() == Path(__file__).resolve().parents[1] / "catalog"


def test_real_catalog_loads_with_every_required_id(catalog):
    assert REQUIRED_IDS <= set(catalog)
    assert all(entry.kind in KINDS for entry in catalog.values())


def test_every_entry_has_a_link_and_sourced_facts(catalog):
    for entry in catalog.values():
        assert entry.links, entry.id
        assert all(url.startswith("https://") for url in entry.links.values()), entry.id
        assert entry.facts, entry.id
        assert all(fact.text and fact.source for fact in entry.facts), entry.id


def test_every_reference_resolves(catalog):
    for entry in catalog.values():
        assert entry.id not in entry.references
        for ref in entry.references:
            assert ref in catalog, f"{entry.id} -> {ref}"


def test_tactics_reference_their_justification(catalog):
    tactics = [entry for entry in catalog.values() if entry.kind == "tactic"]
    from tilepipe.report.tactics import TACTICS

    # exactly the tactics the summary can claim have an entry, and no other
    assert {t.id for t in tactics} == {i for i in REQUIRED_IDS if i.startswith("tactic-")} == {tactic.id for tactic in TACTICS}
    for tactic in tactics:
        assert any(catalog[ref].kind != "tactic" for ref in tactic.references), tactic.id


def test_format_entry_shows_links_facts_and_sources():
    entry = Entry(
        id="x-paper",
        title="Title",
        kind="paper",
        links={"arxiv": "https://arxiv.org/abs/1"},
        facts=(Fact("A fact.", "Sec. 2"),),
        references=("y",),
        summary="One sentence.",
    )
    text = format_entry(entry)
    for expected in ("x-paper", "Title", "One sentence.", "https://arxiv.org/abs/1", "A fact.",
                     "source: Sec. 2", "references: y"):
        assert expected in text


def test_format_listing_has_one_line_per_entry(catalog):
    lines = format_listing(catalog).splitlines()
    assert len(lines) == len(catalog)
    for line, entry in zip(lines, catalog.values()):
        assert line.split()[:2] == [entry.id, entry.kind]
        assert line.endswith(entry.title)
    assert format_listing(list(catalog.values())) == format_listing(catalog)


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (VALID_ENTRY.replace('title: "A valid entry"\n', ""), "missing required field(s): title"),
        (VALID_ENTRY.replace("kind: paper", "kind: blogpost"), "unknown kind 'blogpost'"),
        (VALID_ENTRY.replace("kind: paper", "kind: tactic"), "tactic must list at least one"),
        (VALID_ENTRY + "references: [no-such-entry]\n", "references unknown id(s): no-such-entry"),
        (VALID_ENTRY.replace("id: {id}", "id: other-name"), "does not match the file name"),
        (VALID_ENTRY + "referneces: [good]\n", "unknown field(s): referneces"),
        (VALID_ENTRY.replace("  arxiv: https://arxiv.org/abs/0000.00000\n", "  {{}}\n"),
         "'links' must be a mapping"),
        (VALID_ENTRY.replace("    source: \"arXiv 0000.00000, Sec. 1\"\n", ""),
         "fact 1 must have exactly the fields"),
        ("id: [unclosed\n", "cannot read YAML"),
    ],
)
def test_broken_catalog_names_the_file_and_problem(tmp_path, text, problem):
    _write(tmp_path, "good", VALID_ENTRY.format(id="good"))
    bad = _write(tmp_path, "bad", text.format(id="bad"))
    with pytest.raises(TilepipeError) as caught:
        load_catalog(tmp_path)
    message = str(caught.value)
    assert str(bad) in message
    assert problem in message
    assert "\n" not in message


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(TilepipeError, match="no catalog entries"):
        load_catalog(tmp_path)
