"""Every module of shiftforge imports, and the import graph keeps its shape:
stages are pure transforms that never import from `pipeline`, and modules do
not import each other in circles.

The graph is read from the source (every `import`, at module level or inside a
function), so an import that only runs on some path still counts. The lists of
known exceptions below may only shrink: a new edge or cycle fails the test, and
so does a listed one that is gone (then delete it from the list).
"""

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")

# stages -> pipeline imports that remain (importer, imported): none
KNOWN_STAGE_TO_PIPELINE: set[tuple[str, str]] = set()
# import cycles that remain, each as its sorted module names
KNOWN_CYCLES = {
    ("pipeline.build", "pipeline.packing", "pipeline.provenance", "pipeline.task"),
}


def module_names() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = module_names()


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _target(name: str) -> str | None:
    """The module of ours `name` lands in (its longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> set[str]:
    path = MODULES[name]
    targets: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(_target(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, path.name == "__init__.py", node)
            # `from package import submodule` depends on the submodule, not on the package's other names
            submodules = {f"{module}.{alias.name}" for alias in node.names} & MODULES.keys()
            targets.update(submodules)
            if len(submodules) < len(node.names):
                targets.add(_target(module))
    return {t for t in targets if t and t != name}


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    graph.add_edges_from((name, target) for name in MODULES for target in imports_of(name))
    return graph


@pytest.mark.parametrize("name", [n for n in MODULES if not n.endswith("__main__")])
def test_every_module_imports(name):
    importlib.import_module(name)


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert graph.has_edge("pipeline.manifest", "stages.registry")
    assert graph.has_edge("pipeline.sources", "pipeline.sources.base")     # from pipeline.sources.base import …
    assert graph.has_edge("stages.corruptions", "stages.base") or graph.has_edge("stages.corruptions",
                                                                                  "stages")


def test_stages_never_import_from_pipeline():
    found = {(a, b) for a, b in import_graph().edges if a.startswith("stages") and b.startswith("pipeline")}
    assert found == KNOWN_STAGE_TO_PIPELINE


def test_no_import_cycles():
    cycles = {tuple(sorted(c)) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1}
    assert cycles == KNOWN_CYCLES
