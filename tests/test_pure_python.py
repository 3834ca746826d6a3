"""fngate/pure_python.py: which file a data-plane module loads from, on a package made
here (a .py and a file named as this Python's extension; the finder only looks at names
and times, so it never has to load the fake extension)."""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

import pytest

from fngate.pure_python import SourceFirstFinder, extension_beside


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "hot.py").write_text("X = 1\n")
    (tmp_path / "cold.py").write_text("X = 2\n")  # never built
    (tmp_path / ("hot" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"not really an ELF")
    return tmp_path


def _age(path: Path, seconds: float) -> None:
    t = os.path.getmtime(path) - seconds
    os.utime(path, (t, t))


def test_a_fresh_build_is_left_to_the_ordinary_importer(folder: Path) -> None:
    _age(folder / "hot.py", 60)
    assert SourceFirstFinder("pkg.", pure=False).find_spec("pkg.hot", [str(folder)]) is None


def test_pure_mode_loads_the_source_even_beside_a_fresh_build(folder: Path) -> None:
    _age(folder / "hot.py", 60)
    spec = SourceFirstFinder("pkg.", pure=True).find_spec("pkg.hot", [str(folder)])
    assert spec is not None and spec.origin == str(folder / "hot.py")


def test_an_extension_older_than_its_source_is_never_loaded(folder: Path) -> None:
    _age(folder / ("hot" + importlib.machinery.EXTENSION_SUFFIXES[0]), 60)  # hot.py edited since the build
    spec = SourceFirstFinder("pkg.", pure=False).find_spec("pkg.hot", [str(folder)])
    assert spec is not None and spec.origin == str(folder / "hot.py")


def test_modules_without_a_build_or_outside_the_prefix_are_not_its_business(folder: Path) -> None:
    finder = SourceFirstFinder("pkg.", pure=True)
    assert finder.find_spec("pkg.cold", [str(folder)]) is None
    assert finder.find_spec("other.hot", [str(folder)]) is None
    assert finder.find_spec("pkg.missing", [str(folder)]) is None
    assert finder.find_spec("pkg", None) is None
    assert extension_beside(str(folder / "cold.py")) is None
    assert extension_beside(str(folder / "hot.py")) == str(folder / ("hot" + importlib.machinery.EXTENSION_SUFFIXES[0]))
