"""The three layers of DESIGN.md, checked on the source: ``recon_service -> pipelines -> models``, arrows never
back, and no import cycle between the project's modules.

Every ``.py`` file under models/, pipelines/ and recon_service/ is parsed with ``ast``; every import counts,
also those inside functions and under ``if TYPE_CHECKING:`` (a cycle hidden in a function is still a cycle of
responsibilities). ``import a.b.c`` and ``from a.b import c`` are resolved to the module ``a.b.c`` when that
is a module of the project, else to the longest prefix that is one (``a.b``); relative imports are resolved
against the importing package. The packages a dotted import implicitly initialises (``a``, ``a.b``) add no
edges: only the module an import names does. No ``__init__`` re-export edge needs to be ignored.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "pipelines", "recon_service")
LAYER = {"models": 0, "pipelines": 1, "recon_service": 2}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def project_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module and package of the project."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to: itself, or its longest prefix that is a module; None outside."""
    modules = project_modules()
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _type_checking_imports(tree: ast.AST) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for stmt in node.body:
                found.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return found


def _imports(module: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """``(imported project module, line, only under TYPE_CHECKING)`` for each import anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = _type_checking_imports(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _resolve(alias.name)) is not None:
                    yield target, node.lineno, id(node) in typing_only
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") if alias.name != "*" else None
                if target is None or target == module:  # ``from pkg import name`` inside pkg/__init__
                    target = _resolve(base)
                if target is not None:
                    yield target, node.lineno, id(node) in typing_only


@lru_cache(maxsize=1)
def _scan() -> tuple[dict[str, dict[str, int]], frozenset[tuple[str, str]]]:
    graph: dict[str, dict[str, int]] = {}
    runtime: set[tuple[str, str]] = set()
    every: set[tuple[str, str]] = set()
    for module, path in project_modules().items():
        edges = graph.setdefault(module, {})
        for target, line, typing_only in _imports(module, path):
            if target != module:
                edges.setdefault(target, line)
                every.add((module, target))
                if not typing_only:
                    runtime.add((module, target))
    return graph, frozenset(every - runtime)


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` over the project's modules (self-imports left out)."""
    return _scan()[0]


def typing_only_edges() -> frozenset[tuple[str, str]]:
    """The edges whose every import sits under ``if TYPE_CHECKING:``: they count, and are named as such."""
    return _scan()[1]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so deep graphs do not hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    typing_only = typing_only_edges()
    edges = [f"{a} -> {b} (line {graph[a][b]}{', TYPE_CHECKING only' if (a, b) in typing_only else ''})"
             for a in component for b in sorted(graph[a]) if b in members]
    return "{" + ", ".join(component) + "}: " + "; ".join(edges)


def test_every_project_file_parses_and_is_seen() -> None:
    graph = import_graph()
    assert {"models", "pipelines", "recon_service"} <= set(graph)
    assert "pipelines.io.detect" in graph["recon_service.jobs.inputs"]  # a module-level import
    assert "pipelines.simulate.ct" in graph["recon_service.demo"]  # an import inside a function
    assert "pipelines.simulate.mri" in graph["recon_service.cli"]  # ``from pipelines.simulate import mri``


def test_layers_point_down() -> None:
    """models imports neither pipelines nor recon_service; pipelines does not import recon_service."""
    wrong = [f"{source} imports {target} (line {line})"
             for source, edges in import_graph().items() for target, line in edges.items()
             if LAYER[target.partition(".")[0]] > LAYER[source.partition(".")[0]]]
    assert not wrong, "imports against the layers (recon_service -> pipelines -> models):\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, ("import cycles between project modules (each group imports itself through the others):\n"
                       + "\n".join(_describe(c, graph) for c in found))


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"d": 1, "f": 1}, "f": {"e": 1}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []
