"""Packages talk through published names only: an import from another Swift package names a package (an
`__init__.py`) and only names in its `__all__`, so a satellite never reaches into another package's modules. A module
loaded by name (`importlib.import_module("swift.train.arguments")`) counts as an import: it cannot step round the
rule (or the import-linter contracts). Inside one package, modules import freely, but without cycles."""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.conftest import ROOT

PACKAGES = {p.name.removeprefix("swift-"): p / "src" / "swift" / p.name.removeprefix("swift-")
            for p in sorted((ROOT / "packages").iterdir()) if (p / "src" / "swift").is_dir()}
_LOADERS = {"import_module", "find_spec", "__import__"}


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of a `swift.` module, including modules loaded by a string."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("swift."):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("swift.")]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            value = node.args[0].value
            if name in _LOADERS and isinstance(value, str) and value.startswith("swift."):
                found.append((node.lineno, value, []))
    return found


def _violation(own: str, module: str, names: list[str]) -> str | None:
    other = module.split(".")[1]
    if other == own or other not in PACKAGES:
        return None
    parts = module.split(".")[2:]
    if any(part.startswith("_") for part in parts):
        return f"{module} is private"
    if not (PACKAGES[other].joinpath(*parts) / "__init__.py").is_file():
        return f"{module} is a module, not a package: import its names from the package that exports them"
    if not names:
        return f"`import {module}` / a string import: import names from it instead"
    published = set(getattr(importlib.import_module(module), "__all__", ()))
    hidden = [n for n in names if n not in published]
    return f"{module} does not export {hidden} (its __all__)" if hidden else None


def test_packages_import_only_published_names_of_other_packages():
    problems = []
    for own, src in PACKAGES.items():
        for path in sorted(src.rglob("*.py")):
            for line, module, names in _imports(ast.parse(path.read_text(encoding="utf-8"))):
                if (why := _violation(own, module, names)) is not None:
                    problems.append(f"{path.relative_to(ROOT)}:{line}: {why}")
    assert problems == []


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle_inside_a_package(package):
    """Module-level imports only (an import inside a function runs later and cannot deadlock a package's import)."""
    src = PACKAGES[package]
    graph: dict[str, set[str]] = {}
    for path in src.rglob("*.py"):
        relative = path.relative_to(src.parents[1]).with_suffix("")
        name = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, ast.ImportFrom | ast.Import)]
        graph[name] = _module_imports(top)
    modules = set(graph)
    # `from pkg import submodule` imports the submodule (pkg is already initialising): an edge to it, not to pkg
    graph = {m: {t[1] if t[1] in modules else t[0] for t in ts} for m, ts in graph.items()}
    graph = {m: {t for t in ts if t in modules and t != m} for m, ts in graph.items()}
    cycles = _cycles(graph)
    assert cycles == []


def _module_imports(nodes: list[ast.stmt]) -> set[tuple[str, str]]:
    """(module, module.name) per imported name, and (module, module) for `import module`."""
    out: set[tuple[str, str]] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out |= {(node.module, f"{node.module}.{a.name}") for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {(a.name, a.name) for a in node.names}
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_checks_catch_what_they_are_for():
    reach_in = ast.parse("from swift.infer.engine.pt.scheduler import PtGenerator\n"
                         "import importlib\nimportlib.import_module('swift.train.arguments')\n")
    found = _imports(reach_in)
    assert [m for _, m, _ in found] == ["swift.infer.engine.pt.scheduler", "swift.train.arguments"]
    assert "not a package" in _violation("train", "swift.infer.engine.pt.scheduler", ["PtGenerator"])
    assert "string import" in _violation("ui", "swift.train", [])
    assert _violation("train", "swift.core", ["ConfigError"]) is None
    assert "does not export" in _violation("train", "swift.core", ["_EXPORTS"])
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
