"""pytest config for the micro benchmarks: collect `bench_*.py` here (never in `make test`).

`make test` collects only tests/ (testpaths); `pytest bench/` (what `python -m fngate.bench`
runs, with --benchmark-json) collects the `bench_*.py` modules of this directory.
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    # a file named on the command line is collected by pytest itself already
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
