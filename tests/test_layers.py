"""The engine never depends on the UI: `hypervisor` (and `lessons`, built on it) must not
import textual."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import hypervisor
import lessons

ENGINE = Path(hypervisor.__file__).parent
LESSONS = Path(lessons.__file__).parent


def test_no_engine_module_imports_textual_in_its_source():
    offenders = []
    for path in [*ENGINE.rglob("*.py"), *LESSONS.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in ("textual", "tui")]
    assert offenders == []


def test_importing_the_whole_engine_loads_no_textual():
    modules = [m.name for m in pkgutil.walk_packages([str(ENGINE)], "hypervisor.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print('textual' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert importlib.import_module("hypervisor.cli")
