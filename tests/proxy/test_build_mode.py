"""The data plane runs the build it was asked for: the C extensions `make install` builds
(pyproject.toml [tool.fngate] compiled), or every module from its .py with
FNGATE_PURE_PYTHON=1; the gateway says which in its start log and on /metrics.

`make test` runs this file in both modes (tests/proxy passes once compiled, once pure)."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import httpx
import pytest

from fngate.proxy.config import GatewayConfig
from fngate.proxy.ops.build_mode import loaded_build
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.conftest import REPO

EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def compile_list() -> list[str]:
    """The modules the build compiles, by import name (their paths mapped through package-dir)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = {d: pkg for pkg, d in config["tool"]["setuptools"]["package-dir"].items()}
    names = []
    for path in config["tool"]["fngate"]["compiled"]:
        top, _, rest = path.removesuffix(".py").partition("/")
        names.append(folders[top] + "." + rest.replace("/", "."))
    return names


def built() -> bool:
    """`make install` builds the extensions wherever there is a C compiler to build them with."""
    return shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is not None


def expected_mode() -> str:
    return "compiled" if built() and os.environ.get("FNGATE_PURE_PYTHON") != "1" else "pure"


def test_the_compile_list_names_real_modules():
    names = compile_list()
    assert "fngate.proxy.calls.call" in names and "fngate.proxy.instances.h1" in names
    for name in names:
        assert importlib.util.find_spec(name) is not None, name


def test_every_listed_module_runs_from_the_build_this_mode_asks_for():
    mode = expected_mode()
    files = {name: importlib.import_module(name).__file__ or "" for name in compile_list()}
    if mode == "compiled":
        wrong = {n: f for n, f in files.items() if not f.endswith(EXTENSION_SUFFIXES)}
        assert not wrong, f"expected the compiled build (run `make install` after editing proxy/): {wrong}"
    else:
        wrong = {n: f for n, f in files.items() if not f.endswith(".py")}
        assert not wrong, f"FNGATE_PURE_PYTHON=1 or no compiler, yet extensions were loaded: {wrong}"
    assert loaded_build()[0] == mode


@pytest.mark.parametrize("pure", ["1", None])
def test_a_fresh_process_loads_what_the_variable_says(pure):
    """Both modes from either pass: a new interpreter, with and without FNGATE_PURE_PYTHON=1."""
    env = {k: v for k, v in os.environ.items() if k != "FNGATE_PURE_PYTHON"}
    if pure:
        env["FNGATE_PURE_PYTHON"] = pure
    code = "import importlib, sys\nfor n in sys.argv[1:]: print(importlib.import_module(n).__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code, *compile_list()], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert len(out) == len(compile_list())
    if pure or not built():
        assert all(f.endswith(".py") for f in out), out
    else:
        assert all(f.endswith(EXTENSION_SUFFIXES) for f in out), out


async def test_the_gateway_logs_its_build_at_start_and_exposes_it_on_metrics(caplog):
    mode = expected_mode()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=0, host="127.0.0.1"), SnapshotHolder(), "gw-build")
    with caplog.at_level(logging.INFO, logger="fngate.proxy.server"):
        await gw.start()
    try:
        started = [r for r in caplog.records if r.name == "fngate.proxy.server" and "data plane" in r.getMessage()]
        assert len(started) == 1 and started[0].levelno == logging.INFO
        assert f"data plane {mode} (" in started[0].getMessage()
        async with httpx.AsyncClient() as c:
            text = (await c.get(f"http://127.0.0.1:{gw.admin_port}/metrics")).text
        assert f'fngate_gateway_build_info{{mode="{mode}"}} 1' in text.splitlines()
    finally:
        await gw.stop(grace=1)
