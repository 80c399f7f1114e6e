"""The package layout is a layered, acyclic graph: every import of harness (top level or inside a function) goes
to the same package or a lower layer, and only the model registry imports the model zoo.

The layers are the ones docs/architecture.md draws; a change that needs an upward import moves code to the
right layer instead of hiding the import inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "harness"

# Lowest first. Packages in one layer are peers and may not import each other.
LAYERS: list[set[str]] = [
    {"core"},  # harness/*.py: errors, hashing, types, store, images, parallel, ... and harness/data
    {"models", "datasets", "executors"},
    {"features"},
    {"references"},
    {"metrics"},
    {"plan"},
    {"reports"},
    {"run"},
    {"api"},  # the Python API (harness.score / run / load_results); the CLI is a thin layer over it
    {"cli"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}

# Plugin discovery: the one module allowed to import outside harness into the model zoo.
ZOO_IMPORTERS = {"harness.models.adapters"}

# The package root re-exports the Python API (``harness.score``, ``harness.run(...)``): harness/__init__.py imports
# it inside functions, at first use, and makes the harness/run package (whose __init__ imports nothing) callable.
# No import-time edge, so these are left out of the graph; test_the_root_reexports_only_the_api holds them to that.
ROOT_EXPORTS = {"harness.api", "harness.api.runs", "harness.run"}


def module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module name an ``import`` / ``from`` statement anywhere in the file names (``from a import b``
    yields ``a`` and ``a.b``: b may be a submodule)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the project uses absolute imports only)"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def resolve(imported: str, known: dict[str, Path]) -> str:
    """The harness module an imported name is, or is in (its longest known prefix; "" when none)."""
    while imported and imported not in known:
        imported = imported.rpartition(".")[0]
    return imported


def graph() -> dict[str, set[str]]:
    """harness module -> the harness modules it imports (a name resolves to its longest known prefix)."""
    known = modules()
    edges = {}
    for name, path in known.items():
        targets = set()
        for imported in imported_names(path):
            imported = resolve(imported, known)
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets - ROOT_EXPORTS if name == "harness" else targets
    return edges


def package(module: str) -> str:
    """The role package of a module: ``harness.run.score`` -> run; top-level modules are the core."""
    parts = module.split(".")
    if len(parts) < 2 or (HARNESS / f"{parts[1]}.py").exists() or parts[1] == "data":
        return "core"
    return parts[1]


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_package_has_a_layer():
    packages = {package(m) for m in modules()}
    assert packages - set(RANK) == set(), "a new package: give it a layer in LAYERS and docs/architecture.md"


def test_no_import_cycles():
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found)


def test_imports_go_down_the_layers():
    upward = []
    for source, targets in graph().items():
        for target in targets:
            a, b = package(source), package(target)
            if a != b and RANK[b] >= RANK[a]:
                upward.append(f"{source} ({a}) imports {target} ({b})")
    assert upward == [], "imports that are not to a lower layer:\n" + "\n".join(sorted(upward))


def test_only_the_model_registry_imports_the_zoo():
    importers = {name for name, path in modules().items()
                 if any(n == "model_zoo" or n.startswith("model_zoo.") for n in imported_names(path))}
    assert importers == ZOO_IMPORTERS


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checks themselves: a two-module cycle is found, and core -> cli counts as upward."""
    assert cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert package("harness.errors") == "core" and package("harness.cli.main") == "cli"
    assert RANK[package("harness.store")] < RANK[package("harness.cli.main")]


def test_the_root_reexports_only_the_api():
    """harness/__init__.py imports nothing above the core but the API it re-exports (inside functions) and the
    run package it makes callable, whose own __init__ imports nothing: ``import harness`` stays cheap."""
    root = HARNESS / "__init__.py"
    known = modules()
    upward = {resolve(n, known) for n in imported_names(root)} - {"", "harness"}
    upward = {n for n in upward if package(n) != "core"}
    assert upward and upward <= ROOT_EXPORTS, upward
    top_level = {a.name for node in ast.parse(root.read_text()).body if isinstance(node, ast.Import)
                 for a in node.names}
    assert top_level & ROOT_EXPORTS == {"harness.run"}  # the API itself only inside functions
    assert imported_names(HARNESS / "run" / "__init__.py") == set()
