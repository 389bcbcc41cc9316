"""The shape of the source tree: no import cycles among humwatch's modules, no oversized modules.

Both read the files under ``src/humwatch`` as text (``ast``); nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "humwatch"

MAX_LINES = 500
OVERSIZED: set[str] = set()
"""Modules allowed over MAX_LINES for a while (paths relative to src/humwatch); empty since every module was split."""


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("humwatch",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt]):
    """Every import statement of the module: the module body, and the bodies of its functions,
    classes and of every if / try / with / loop inside them (an import inside a function runs
    when it is called: it is part of the module's dependencies all the same); not ``if
    TYPE_CHECKING:`` blocks (typing only, never run)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _imports([child])
                elif isinstance(child, (ast.excepthandler, ast.match_case)):
                    yield from _imports(child.body)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the humwatch modules its imports (every one, function bodies included) run.

    ``from humwatch.pkg import name`` goes to ``humwatch.pkg.name`` when that is a module, else to
    ``humwatch.pkg``. Importing ``humwatch.a.b`` also runs ``humwatch.a`` (and ``humwatch``), so those are
    edges too, except the importer's own parent packages: Python has started those before the
    importer runs, so importing a sibling does not run them again.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own_package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:
                base_parts = own_package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
        edges: set[str] = set()
        own_ancestors = set(_ancestors(name))
        for target in targets:
            if target not in modules:
                continue  # not humwatch's (numpy, torch ...)
            edges.add(target)
            edges.update(a for a in _ancestors(target) if a not in own_ancestors)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_no_import_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    graph = import_graph()
    assert graph["humwatch.data"] >= {"humwatch.data.clips", "humwatch.data.loading"}, "the import graph misses edges"
    # imports inside functions count: humwatch.calibrate imports humwatch.metrics only inside fit_monitor
    assert "humwatch.metrics" in graph["humwatch.calibrate"], "the import graph misses imports inside functions"
    cycle = find_cycle(graph)
    if cycle:
        print("import cycle: " + " -> ".join(cycle))
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(cycle)


def test_no_oversized_modules():
    sizes = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines()) for path in sorted(PACKAGE.rglob("*.py"))
    }
    stale = sorted(rel for rel in OVERSIZED if sizes.get(rel, 0) <= MAX_LINES)
    assert not stale, f"OVERSIZED lists modules that are gone or no longer over {MAX_LINES} lines: {stale}"
    too_big = {rel: n for rel, n in sizes.items() if n > MAX_LINES and rel not in OVERSIZED}
    assert not too_big, f"modules over {MAX_LINES} lines (split them): " + ", ".join(f"{rel} ({n})" for rel, n in sorted(too_big.items()))


def test_no_module_imports_the_public_api():
    """``humwatch/__init__.py`` is the public API, free to import any module: none imports it back
    (the version is in the leaf ``humwatch._version``)."""
    graph = import_graph()
    users = sorted(name for name, edges in graph.items() if "humwatch" in edges)
    assert not users, f"these import the package humwatch itself (use humwatch._version): {users}"
