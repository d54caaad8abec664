"""The layers of ``tilepipe``, declared once and held here: imports point down, never up, and
never in a circle.

Every ``import`` statement of a module counts, wherever it sits: a deferred import inside a
function is still a dependency (it runs when the function does, and a circle through it is a
circle of meaning even where Python tolerates it). Two kinds of import are not counted:

* imports under ``if TYPE_CHECKING:``: they never run; they name a type for annotations only
  (written as strings under ``from __future__ import annotations``), so they load nothing and
  cannot close a circle at import time. The module depends on the shape of what it is given,
  not on the module that makes it;
* the import of a module's own package that Python makes before it (``tilepipe.sources.dicom``
  runs ``tilepipe/sources/__init__.py`` first): every module has that one, so only the imports a
  module writes are edges (as import-linter counts them).

The check is a plain test on the standard library's ``ast``: no tool to install, and it runs
wherever the suite runs (``.ci/run`` included). A module missing from :data:`LAYERS` fails it,
so the map stays complete as modules are added.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tilepipe"

LAYERS: dict[str, tuple[str, ...]] = {
    # what every layer may use, on the standard library alone: the error type, the modes, the label
    # constants, the option grammars and parsers, retrying a write
    "leaves": ("errors", "modes", "labels", "option_grammars", "option_values", "retry"),
    # values, each with its own defaults: geometry, sources, models, the device, blending, the store
    "values": (
        "grid", "partition", "measure_units", "measures", "device", "engine_options", "stitch", "store_info", "sink",
        "exporters.colors", "ngff",  # the class palette and the OME-NGFF metadata the store and pyramid write
        "sources", "sources.spec", "sources.scaling", "sources.identity", "sources.geotiff", "sources.dicom",
        "sources.dicom_files", "sources.dicom_frames", "sources.dicom_geometry", "sources.dicom_header",
        "sources.dicom_pixels", "sources.dicom_stack", "sources.dicom_volumes", "sources.dicom_window",
        "sources.dicom_wsi", "sources.dicom_labels", "sources.dicom_spacing", "sources.dicom_warnings",
        "model", "model.architectures", "model.card", "model.checkpoints", "model.compare", "model.costs",
        "model.loading",
    ),
    # the machinery of a run: the engine, a task's stream, the Dask graph, what follows the blocks
    "machinery": (
        "forward_timing", "engine", "stream", "blocks", "sizing", "schedule", "local_cluster", "stopping",
        "pyramid", "lease", "resume",
    ),
    # the options and everything a user calls: API, command line, batch, reports, exports
    "top": (
        "options", "config", "preparation", "pipeline", "batch", "batch_inputs", "cli", "__main__", "tilepipe",
        "testing",  # synthetic inputs for tests and benchmarks; nothing in the package imports it
        "report", "report.advice", "report.catalog", "report.cost", "report.doctor", "report.figures",
        "report.markdown", "report.origins", "report.preview", "report.progress", "report.summary",
        "report.tactics", "report.timeline",
        "exporters", "exporters.cog", "exporters.dicom_seg", "exporters.png", "exporters.regions",
        "exporters.thumbnail", "exporters.vector",
    ),
}
"""Each module of ``tilepipe`` (``tilepipe`` itself for the package's ``__init__``, ``sources`` for
``tilepipe/sources/__init__.py``), by layer, lowest first. A module may import its own layer and
those below; within a layer only the absence of circles is asked."""


def module_names(package: Path) -> dict[str, Path]:
    """Dotted names (without the package's own name; the package itself as its name) -> file."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts) or package.name] = path
    return names


def _runs(node: ast.If) -> bool:
    """False for ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``), whose body never runs."""
    test = node.test
    return not ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
                or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(nodes):
    """Every import statement among ``nodes`` and inside them that can run, at any depth
    (functions, methods, try blocks...)."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not _runs(node):
            yield from _imports(node.orelse)
        else:
            yield from _imports(ast.iter_child_nodes(node))


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (by the names of :func:`module_names`)."""
    top = package.name
    names = module_names(package)

    def known(dotted: str) -> str | None:
        """The module a dotted name (``tilepipe.sources.dicom.DicomSource``) lands in, or None outside."""
        parts = dotted.split(".")
        if parts[0] != top:
            return None
        parts = parts[1:]
        while parts and ".".join(parts) not in names:
            parts.pop()
        return ".".join(parts) or top

    graph = {}
    for name, path in names.items():
        package_parts = [top] + ([] if name == top else name.split("."))
        if path.name != "__init__.py":
            package_parts.pop()
        edges = set()
        for node in _imports([ast.parse(path.read_text(), str(path))]):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package_parts[:len(package_parts) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{alias.name}" for alias in node.names]
            edges.update(target for target in map(known, targets) if target is not None)
        edges.discard(name)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return sorted(found)


def upward_imports(graph: dict[str, set[str]], layers: dict[str, tuple[str, ...]]) -> list[str]:
    level = {module: (rank, layer) for rank, (layer, modules) in enumerate(layers.items()) for module in modules}
    return [f"{module} ({level[module][1]}) imports {target} ({level[target][1]})"
            for module in sorted(graph) for target in sorted(graph[module])
            if module in level and target in level and level[target][0] > level[module][0]]


def test_every_module_sits_in_one_layer():
    placed = [module for modules in LAYERS.values() for module in modules]
    modules = set(module_names(PACKAGE))
    assert not {m for m in placed if placed.count(m) > 1}, "a module placed in two layers"
    assert sorted(modules - set(placed)) == [], "modules missing from LAYERS: place each in its layer"
    assert sorted(set(placed) - modules) == [], "LAYERS names modules that no longer exist"


def test_no_import_circle():
    found = circles(import_graph(PACKAGE))
    assert not found, "import circles (strongly connected groups):\n" + "\n".join(
        f"{len(group)} modules: {', '.join(group)}" for group in found)


def test_imports_point_down():
    upward = upward_imports(import_graph(PACKAGE), LAYERS)
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_import_tilepipe_does_not_import_torch():
    """The options, the command line's flags and ``tilepipe --version`` do without torch (seconds to
    import): it loads when a run or a plan needs the network."""
    script = ("import sys, tilepipe, tilepipe.options, tilepipe.config, tilepipe.cli; "
              "print(sorted({'torch', 'torchvision'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checks_see_deferred_relative_and_typing_imports(tmp_path):
    """The graph the checks read: a deferred import is an edge, an ``if TYPE_CHECKING:`` one is not
    (its ``else`` is), relative and absolute spellings land on the same module, and a name imported
    from a package lands on the package unless it is a submodule."""
    package = _write(tmp_path, {
        "__init__.py": "",
        "low.py": "X = 1\n",
        "mid.py": "def f():\n    from .top import Y\n",
        "top.py": "from typing import TYPE_CHECKING\nimport pkg.low\nif TYPE_CHECKING:\n    from . import mid\n"
                  "else:\n    import os\n",
        "sub/__init__.py": "from ..low import X\n",
        "sub/leaf.py": "from . import helper\nfrom pkg.sub import leaf\nfrom .. import mid\n",
        "sub/helper.py": "",
    })
    assert import_graph(package) == {
        "pkg": set(), "low": set(), "mid": {"top"}, "top": {"low"}, "sub": {"low"},
        "sub.leaf": {"sub.helper", "mid"}, "sub.helper": set(),
    }


@pytest.mark.parametrize("files, circle", [
    ({"a.py": "from . import b\n", "b.py": "def f():\n    from . import a\n"}, [["a", "b"]]),
    ({"a.py": "from . import b\n", "b.py": "from . import c\n", "c.py": "import pkg.a\n"}, [["a", "b", "c"]]),
    ({"a.py": "from . import b\n", "b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                           "    from . import a\n")}, []),
])
def test_a_circle_is_found(tmp_path, files, circle):
    assert circles(import_graph(_write(tmp_path, {"__init__.py": "", **files}))) == circle


def test_an_upward_import_is_found(tmp_path):
    package = _write(tmp_path, {"__init__.py": "", "low.py": "def f():\n    from .high import g\n",
                                "high.py": "from .low import f\n"})
    layers = {"leaves": ("low",), "top": ("high", "pkg")}
    assert upward_imports(import_graph(package), layers) == ["low (leaves) imports high (top)"]
