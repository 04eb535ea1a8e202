"""Structural rules of the package (issue 12): no import cycle (lazy imports included), nothing imported
from experiments/, a training loop that fits on a screen, and no function over 80 lines in the core."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rna", "rna_theory", "rna_train")
CORE = ("config", "schema", "models", "data", "losses", "methods", "step", "trainer", "checkpoint", "refcache", "rna")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in ``path`` (function bodies too), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for branch in ast.walk(tree)
                   if isinstance(branch, ast.If) and getattr(branch.test, "id", None) == "TYPE_CHECKING"
                   for node in ast.walk(branch)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_and_nothing_from_experiments() -> None:
    modules = _modules()
    imports = {name: _imports(path) for name, path in modules.items()}
    graph = {name: {m for m in names if m in modules and m != name} for name, names in imports.items()}
    assert _cycles(graph) == []
    assert not [name for name, names in imports.items() if any(n.split(".")[0] == "experiments" for n in names)]


def _functions(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None}


def test_the_training_loop_fits_on_a_screen_and_core_functions_stay_short() -> None:
    assert _functions(ROOT / "rna_train" / "trainer.py")["train"] <= 60
    long = {}
    for name, path in _modules().items():
        parts = name.split(".")
        if parts[0] == "rna_train" and len(parts) > 1 and parts[1] in CORE:
            long.update({f"{name}.{f}": n for f, n in _functions(path).items() if n > 80})
    assert long == {}


def test_the_cli_help_does_not_import_torch() -> None:
    """``rna --help`` and every subcommand's ``--help`` stay fast: building the parser loads no torch."""
    import subprocess
    import sys

    code = "import sys; from rna_train.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
