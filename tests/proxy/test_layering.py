"""The gateway's layout keeps its dependencies pointing one way.

proxy/ is grouped by role (see each subpackage's docstring). Reading every import of
every module (type-checking-only imports included: a cycle there is still a cycle in
the design), these tests check that no two modules depend on each other, even
through others, and that the layers are respected: the drivers know the call's seam,
the call never imports a driver, the instance side knows neither, and the
shared rules (wire/, routing/) know none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "proxy"
PREFIX = "fngate.proxy."

# package -> packages it must never import
FORBIDDEN = {
    "wire": {"drivers", "calls", "instances", "grpc", "ops", "llm"},
    "routing": {"drivers", "calls", "instances", "grpc", "ops", "llm"},
    "instances": {"drivers", "calls", "grpc", "ops", "llm"},
    "calls": {"drivers", "grpc", "ops", "llm"},
    "grpc": {"drivers", "ops", "llm"},
    "drivers": {"instances", "ops", "llm"},
    # the LLM gateway sits on the call (its Exchange seam and Call) and the routing rules
    "llm": {"drivers", "instances", "grpc", "ops"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PROXY.rglob("*.py"):
        rel = path.relative_to(PROXY).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        found[PREFIX + ".".join(parts) if parts else PREFIX[:-1]] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, known) - {m} for m, p in mods.items()}


def _package(module: str) -> str:
    rest = module[len(PREFIX) :].split(".")
    return rest[0] if len(rest) > 1 else ""


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.endswith("__init__") or n == PREFIX[:-1]:
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles in proxy/:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_point_one_way(package: str) -> None:
    graph = _graph()
    wrong = sorted(
        f"{m} imports {n}" for m, deps in graph.items() if _package(m) == package for n in deps if _package(n) in FORBIDDEN[package]
    )
    assert not wrong, "\n".join(wrong)


def test_every_module_lives_in_a_role_package() -> None:
    top = sorted(p.name for p in PROXY.glob("*.py"))
    assert top == ["__init__.py", "config.py", "errors.py", "server.py"], top
