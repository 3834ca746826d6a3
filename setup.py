"""Builds the data plane's per-request modules as C extensions (Cython), beside their sources.

Everything else about the distribution is in pyproject.toml, and so is the list of modules
(`[tool.fngate] compiled`, by file path). The extensions are optional: where the C compiler
is missing or fails, the build goes on without them and the same modules run as Python.
`FNGATE_PURE_PYTHON=1` at build time skips them altogether (and at run time,
fngate/pure_python.py makes an existing build run from the .py files).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent

# The modules are compiled as they are, so they must behave compiled as they do as Python:
# annotation_typing off keeps a `float` parameter the int it was given and lets a `bytes`
# parameter take a memoryview. A module written for Cython can turn it on in its own header.
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}


def module_name(path: str, package_dir: dict[str, str]) -> str:
    """'proxy/instances/pool.py' -> 'fngate.proxy.instances.pool', through [tool.setuptools.package-dir]."""
    parts = Path(path).with_suffix("").parts
    for n in range(len(parts) - 1, 0, -1):
        folder = "/".join(parts[:n])
        package = next((pkg for pkg, d in package_dir.items() if d == folder), None)
        if package is not None:
            return ".".join((package, *parts[n:]))
    raise ValueError(f"{path}: not under a folder of [tool.setuptools.package-dir]")


def import_layout(package_dir: dict[str, str]) -> str:
    """A folder where the import names resolve to the source folders (build/pxd/fngate/proxy ->
    proxy/, ...), for Cython: it finds a module's .pxd companion, and what it cimports, by
    the module's import name (fngate.proxy.calls.call -> fngate/proxy/calls/call.pxd)."""
    root = HERE / "build" / "pxd"
    for package, folder in package_dir.items():
        link = root.joinpath(*package.split("."))
        if package == "fngate":  # the top package's own folder holds none of the others
            link.mkdir(parents=True, exist_ok=True)
            init = link / "__init__.py"
            if not init.exists():
                init.symlink_to(HERE / folder / "__init__.py")
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(HERE / folder, target_is_directory=True)
    return str(root)


def extensions() -> list[Extension]:
    if os.environ.get("FNGATE_PURE_PYTHON") == "1":
        return []
    config = tomllib.loads((HERE / "pyproject.toml").read_text())
    package_dir = config["tool"]["setuptools"]["package-dir"]
    paths = config["tool"]["fngate"]["compiled"]
    from Cython.Build import cythonize  # a build requirement ([build-system]); not needed at run time

    wanted = [Extension(module_name(p, package_dir), [p]) for p in paths]
    built = cythonize(
        wanted, build_dir="build/cython", compiler_directives=DIRECTIVES, include_path=[import_layout(package_dir)], quiet=True
    )
    for ext in built:
        ext.optional = True  # no compiler, or it failed: the module runs as Python
    return built


setup(ext_modules=extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
