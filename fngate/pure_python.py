"""Which file a data-plane module runs from: its C extension or its .py.

`make install` builds the per-request modules of `fngate.proxy` as C extensions next to
their sources (setup.py), and Python's importer prefers an extension to a .py in the same
folder. This finder, first on `sys.meta_path`, hands out the .py instead when
`FNGATE_PURE_PYTHON=1` asks for pure mode, or when the extension is older than its source
(an edit since the last build: a stale build never runs; `make install` rebuilds it).
Everywhere else it answers nothing and the ordinary import system goes on.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

COMPILED_PACKAGE = "fngate.proxy."


def pure_python_requested() -> bool:
    return os.environ.get("FNGATE_PURE_PYTHON") == "1"


def extension_beside(source: str) -> str | None:
    """The built extension of a module's .py file, if there is one (any of this Python's suffixes)."""
    stem = source.removesuffix(".py")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.isfile(stem + suffix):
            return stem + suffix
    return None


class SourceFirstFinder:
    """A meta path finder for the modules under `prefix` (see the module's docstring)."""

    def __init__(self, prefix: str, pure: bool) -> None:
        self.prefix = prefix
        self.pure = pure

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if path is None or not fullname.startswith(self.prefix):
            return None
        tail = fullname.rpartition(".")[2]
        for folder in path:
            source = os.path.join(folder, tail + ".py")
            if not os.path.isfile(source):
                continue
            extension = extension_beside(source)
            if extension is None:
                return None  # nothing built: the ordinary finder loads the .py
            if self.pure or os.path.getmtime(extension) < os.path.getmtime(source):
                return importlib.util.spec_from_file_location(fullname, source)
            return None
        return None

    def invalidate_caches(self) -> None:
        pass


def install() -> None:
    """Put the finder first on sys.meta_path, once per process (fngate/__init__.py calls it)."""
    if not any(isinstance(f, SourceFirstFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFirstFinder(COMPILED_PACKAGE, pure_python_requested()))
