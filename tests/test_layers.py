"""The house rules, checked on the source: no import circle, no upward arrow between the four packages, and a
CLI that answers --help and refuses a bad option without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The layers, lowest first: each package may import only those before it (cli -> bench -> exporters -> detr_core).
LAYERS = ("detr_core", "exporters", "bench", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (a name imported from a module resolves to that module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _lazy_exports(node: ast.AST) -> list[str]:
    """The modules of a package's ``_EXPORTS = {"name": "module"}`` table (loaded on first use: still an import)."""
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets) \
            and isinstance(node.value, ast.Dict):
        return [v.value for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``module`` imports, at the top, inside a function or through a lazy export table."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        found |= {_owner(name, modules) for name in _lazy_exports(node)}
        if isinstance(node, ast.Import):
            found |= {_owner(a.name, modules) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {_owner(f"{base}.{a.name}", modules) for a in node.names}
    return {m for m in found if m and m != module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if rank[b.split(".")[0]] > rank[a.split(".")[0]])


def test_the_checks_see_a_planted_circle_and_an_upward_arrow():
    graph = {"detr_core.a": {"detr_core.b"}, "detr_core.b": {"detr_core.a"}, "bench.x": {"cli.main"},
             "cli.main": {"bench.x"}}
    assert sorted(circles(graph)) == [["bench.x", "cli.main"], ["detr_core.a", "detr_core.b"]]
    assert upward(graph) == ["bench.x -> cli.main"]


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_no_upward_import_between_the_packages():
    assert upward(import_graph()) == []


def _imported(code: str) -> set[str]:
    """The top-level package names a fresh interpreter imports to run ``code`` (``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "cli" in names or "detr_core" in names, done.stderr[-2000:]
    return names


HEAVY = {"torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf", "transformers", "executorch"}


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"], ["bench", "--help"],
                                  ["export", "--help"], ["eval", "--help"], ["convert", "--help"],
                                  ["data", "check", "--help"], ["demo", "--help"], ["plot", "--help"],
                                  ["bench", "--threads", "0"], ["train", "--epochs", "0"]])
def test_help_and_refused_options_import_no_heavy_library(argv):
    code = f"import sys; from cli.main import cli; sys.argv = ['detrtool', *{argv!r}]; cli()"
    heavy = _imported(code) & HEAVY
    assert not heavy, f"detrtool {' '.join(argv)} imported {sorted(heavy)}"


def test_import_cli_main_imports_no_torch():
    assert "torch" not in _imported("import cli.main")
