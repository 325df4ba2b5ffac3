"""The layers, checked on every means of import a module has: `import`, `from … import`
(relative too), `importlib.import_module("…")` and `__import__("…")`, at any depth of the
source (inside functions as well as at the top).

The packages, lowest first: `hypervisor` (the engine) < `lessons` (walks built on the engine)
< `tui` (the Textual app; its engine thread follows lessons) < `vmlab` (the command line, the
composition root). A package imports only packages below it; the engine and the lessons never
load Textual; no two modules import each other, directly or round a cycle, except for
annotations (`if TYPE_CHECKING:`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("hypervisor", "lessons", "tui", "vmlab")  # lowest first
TEXTUAL_FREE = ("hypervisor", "lessons")
DYNAMIC = {"import_module", "__import__"}  # importlib.import_module(name), __import__(name)


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (or package), absolute
    line: int
    typing_only: bool  # under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in ORDER for p in (ROOT / package).rglob("*.py")}


def _typing_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def edges(module: str, path: Path) -> Iterator[Edge]:
    """Every import in the module's source, wherever it is written."""

    def visit(node: ast.AST, typing_only: bool) -> Iterator[Edge]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(module, alias.name, node.lineno, typing_only)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, path, node)
            for alias in node.names:  # `from pkg import mod` imports pkg.mod when it is one
                yield Edge(module, f"{target}.{alias.name}", node.lineno, typing_only)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in DYNAMIC and node.args:
                arg = node.args[0]
                target = arg.value if isinstance(arg, ast.Constant) else "<computed>"
                yield Edge(module, str(target), node.lineno, typing_only)
        guarded = isinstance(node, ast.If) and _typing_guard(node)
        for child in ast.iter_child_nodes(node):
            under = typing_only or (guarded and child in node.body)
            yield from visit(child, under)

    yield from visit(ast.parse(path.read_text(), str(path)), False)


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    """The project module an import names (`from a import b` names a.b, or a's name b)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def all_edges() -> list[Edge]:
    return [edge for name, path in modules().items() for edge in edges(name, path)]


def test_the_walk_sees_every_means_of_import(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "import importlib\nfrom typing import TYPE_CHECKING\n"
        "def f():\n    import tui.app\n    importlib.import_module('lessons.walk')\n"
        "    __import__('vmlab.cli')\n    from . import sibling\n"
        "if TYPE_CHECKING:\n    from tui.model import Snapshot\n"
    )
    found = {(e.target, e.typing_only) for e in edges("hypervisor.vmm.probe", source)}
    assert {
        ("tui.app", False),
        ("lessons.walk", False),
        ("vmlab.cli", False),
        ("hypervisor.vmm.sibling", False),
        ("tui.model.Snapshot", True),
    } <= found


def test_no_package_imports_one_above_it() -> None:
    rank = {package: index for index, package in enumerate(ORDER)}
    offenders = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in all_edges()
        if e.target.split(".")[0] in rank
        and rank[e.target.split(".")[0]] > rank[e.source.split(".")[0]]
    ]
    assert offenders == []


def test_the_engine_and_the_lessons_never_import_textual() -> None:
    offenders = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in all_edges()
        if e.source.split(".")[0] in TEXTUAL_FREE and e.target.split(".")[0] == "textual"
    ]
    assert offenders == []


def test_no_dynamic_import_hides_its_target() -> None:
    assert [f"{e.source}:{e.line}" for e in all_edges() if e.target == "<computed>"] == []


def test_no_import_cycles_between_modules() -> None:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for e in all_edges():
        target = _resolve(e.target, known)
        # (a module's own packages are imported before it: no edge)
        if not e.typing_only and target is not None and not f"{e.source}.".startswith(f"{target}."):
            graph[e.source].add(target)
    cycles = _cycles(graph)
    assert cycles == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_importing_the_whole_engine_loads_no_textual() -> None:
    engine = sorted(name for name in modules() if name.split(".")[0] in TEXTUAL_FREE)
    code = (
        "import importlib, sys\n"
        f"for name in {engine!r}: importlib.import_module(name)\n"
        "print('textual' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "False"
