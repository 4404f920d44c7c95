"""Every module of shiftforge imports, and the import graph keeps its shape:
stages are pure transforms that never import from `pipeline`, each part of
`pipeline` imports only downwards (FORBIDDEN), command-line glue lives only in
`pipeline/cli/`, and modules do not import each other in circles.

The graph is read from the source (every `import`, at module level or inside a
function), so an import that only runs on some path still counts.
"""

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")

# What each part of `pipeline` may not import: the build core, sources and writers know nothing
# of the Hub, the views or the command line; what describes a release knows nothing of the Hub,
# views or CLI; nothing but the CLI (and `python -m pipeline`) imports the CLI.
FORBIDDEN = {
    "pipeline.core": ("pipeline.hub", "pipeline.views", "pipeline.cli", "pipeline.evaluate"),
    "pipeline.sources": ("pipeline.core", "pipeline.release", "pipeline.hub", "pipeline.views", "pipeline.cli",
                         "pipeline.evaluate"),
    "pipeline.writers": ("pipeline.core", "pipeline.sources", "pipeline.release", "pipeline.hub", "pipeline.views",
                         "pipeline.cli", "pipeline.evaluate"),
    "pipeline.release": ("pipeline.hub", "pipeline.views", "pipeline.cli"),
    "pipeline.hub": ("pipeline.views", "pipeline.cli"),
    "pipeline.views": ("pipeline.hub", "pipeline.cli"),
    "pipeline.evaluate": ("pipeline.hub", "pipeline.views", "pipeline.cli"),
    "stages": ("pipeline",),
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
    assert graph.has_edge("pipeline.core.manifest", "stages.registry")
    assert graph.has_edge("pipeline.sources", "pipeline.sources.base")     # from pipeline.sources.base import …
    assert graph.has_edge("stages.corruptions", "stages.base") or graph.has_edge("stages.corruptions",
                                                                                  "stages")


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def forbidden_edges(graph: nx.DiGraph) -> set[tuple[str, str]]:
    return {(a, b) for a, b in graph.edges
            for part, banned in FORBIDDEN.items() if _within(a, part) and any(_within(b, x) for x in banned)}


def cycles(graph: nx.DiGraph) -> set[tuple[str, ...]]:
    return {tuple(sorted(c)) for c in nx.strongly_connected_components(graph) if len(c) > 1}


def test_layers_import_only_downwards():
    """Stages are pure transforms (never import `pipeline`); see FORBIDDEN for the rest."""
    assert forbidden_edges(import_graph()) == set()


def test_only_the_cli_imports_the_cli():
    graph = import_graph()
    found = {(a, b) for a, b in graph.edges if _within(b, "pipeline.cli") and not _within(a, "pipeline.cli")}
    assert found == {("pipeline.__main__", "pipeline.cli")}


def test_command_line_glue_lives_in_pipeline_cli():
    """argparse (sub-commands, flags, --help) appears only in pipeline/cli/."""
    users = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names) or (
                    isinstance(node, ast.ImportFrom) and node.module == "argparse"):
                users.add(name)
    assert users and all(_within(name, "pipeline.cli") for name in users), sorted(users)


def test_no_import_cycles():
    assert cycles(import_graph()) == set()


def test_the_checks_see_a_planted_cycle_and_planted_upward_imports():
    graph = import_graph()
    graph.add_edge("pipeline.core.seeding", "pipeline.core.progress")  # two modules that import
    graph.add_edge("pipeline.core.progress", "pipeline.core.seeding")  # nothing of ours
    graph.add_edge("stages.styles", "pipeline.core.seeding")
    graph.add_edge("pipeline.core.seeding", "pipeline.hub.retry")
    assert cycles(graph) == {("pipeline.core.progress", "pipeline.core.seeding")}
    assert forbidden_edges(graph) == {("stages.styles", "pipeline.core.seeding"),
                                      ("pipeline.core.seeding", "pipeline.hub.retry")}
