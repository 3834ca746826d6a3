"""Which build of the data plane this process runs, for the start log and /metrics:
"compiled" (the C extensions `make install` builds, pyproject.toml [tool.fngate] compiled),
"pure" (FNGATE_PURE_PYTHON=1, or nothing built), or "mixed" (some extensions older than
their source, which run as .py until `make install` rebuilds them: fngate/pure_python.py)."""

from __future__ import annotations

import importlib.machinery
import sys

from fngate.pure_python import extension_beside


def loaded_build() -> tuple[str, int, int]:
    """(mode, modules loaded compiled, modules loaded as .py although an extension was built)."""
    compiled = bypassed = 0
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) if name.startswith("fngate.proxy.") else None
        if not origin:
            continue
        if origin.endswith(suffixes):
            compiled += 1
        elif extension_beside(origin) is not None:
            bypassed += 1
    mode = "pure" if compiled == 0 else "mixed" if bypassed else "compiled"
    return mode, compiled, bypassed


def describe_build() -> str:
    mode, compiled, bypassed = loaded_build()
    return f"{mode} ({compiled} modules compiled, {bypassed} built but run as Python)"


def build_info_metric() -> bytes:
    return (
        "# HELP fngate_gateway_build_info The data plane's build: compiled (C extensions), pure (Python) or mixed.\n"
        "# TYPE fngate_gateway_build_info gauge\n"
        f'fngate_gateway_build_info{{mode="{loaded_build()[0]}"}} 1\n'
    ).encode()
