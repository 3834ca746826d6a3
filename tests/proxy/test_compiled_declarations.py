"""The .pxd companions of compiled modules agree with their .py files.

A class a .pxd declares (`cdef class`) is an extension type once compiled: it has no
__dict__, so an attribute its .py assigns but the .pxd does not declare fails at run
time, and only in the compiled build. These checks read both files, so a slot added to
the .py without its declaration (or the reverse) fails in every mode of `make test`;
the compiled suite then runs the declared classes for real.
"""

from __future__ import annotations

import ast
import importlib
import re
import tomllib

import pytest

from fngate.proxy.ops.build_mode import loaded_build
from tests.conftest import REPO

_CLASS = re.compile(r"^cdef class (\w+)\s*(?:\(([\w.]+)\))?\s*:", re.M)
_FIELD = re.compile(r"^\s+cdef (?:public |readonly )?[\w.]+ (\w+)\s*$")
_METHOD = re.compile(r"^\s+c?p?def (?:inline )?(?:[\w.]+ )?(\w+)\(")


def compiled_paths() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["fngate"]["compiled"]


def companions() -> list[str]:
    return [p for p in compiled_paths() if (REPO / p).with_suffix(".pxd").exists()]


def declared(pxd: str) -> dict[str, tuple[set[str], set[str]]]:
    """class -> (fields, methods) as the .pxd declares them."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    current = None
    for line in pxd.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        m = _CLASS.match(line)
        if m:
            current = out.setdefault(m.group(1), (set(), set()))
            continue
        if not line.startswith((" ", "\t")):
            current = None
        elif current is not None:
            if f := _FIELD.match(line):
                current[0].add(f.group(1))
            elif d := _METHOD.match(line):
                current[1].add(d.group(1))
    return out


def classes(source: str) -> dict[str, tuple[set[str], set[str]]]:
    """class -> (__slots__, method names) as the .py defines them."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            slots: set[str] = set()
            methods = set()
            for item in node.body:
                if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in item.targets):
                    slots = set(ast.literal_eval(item.value))
                elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    methods.add(item.name)
            out[node.name] = (slots, methods)
    return out


def test_some_compiled_module_has_a_companion():
    assert "proxy/calls/call.py" in companions()


@pytest.mark.parametrize("path", companions())
def test_every_slot_is_declared_and_every_declared_method_exists(path):
    pxd = declared((REPO / path).with_suffix(".pxd").read_text())
    py = classes((REPO / path).read_text())
    assert pxd, f"{path}: its .pxd declares no class"
    for name, (fields, methods) in pxd.items():
        assert name in py, f"{path}: the .pxd declares {name}, the .py has no such class"
        slots, defined = py[name]
        assert slots == fields, (
            f"{path}: {name}.__slots__ and the .pxd's fields differ: "
            f"not declared {sorted(slots - fields)}, declared but not a slot {sorted(fields - slots)}"
        )
        assert methods <= defined, f"{path}: {name} declares methods the .py does not define: {sorted(methods - defined)}"


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement, not a C extension type


@pytest.mark.parametrize("path", companions())
def test_declared_classes_are_extension_types_exactly_when_compiled(path):
    top, _, rest = path.removesuffix(".py").partition("/")
    module = importlib.import_module(f"fngate.{top}.{rest.replace('/', '.')}")
    compiled = not (module.__file__ or "").endswith(".py")
    assert compiled == (loaded_build()[0] == "compiled") or loaded_build()[0] == "mixed"
    for name in declared((REPO / path).with_suffix(".pxd").read_text()):
        cls = getattr(module, name)
        assert bool(cls.__flags__ & _HEAPTYPE) is not compiled, name
