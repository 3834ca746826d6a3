"""The distribution as a user installs it: one top-level import package, `fngate`.

Builds the wheel from this checkout, installs it into an empty virtual environment
and starts `fngate serve` from there, both as the console script and as
`python -m fngate`, to check that nothing depends on the repository's layout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

FOLDERS = ("proxy", "control", "backends", "loadtests", "bench")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # pip builds a local directory in place (build/ keeps the compiled objects, so this is incremental);
    # make test's workers take a test file each, so no other test process builds here at the same time
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    [built] = out.glob("fngate-*.whl")
    return built


def test_the_wheel_has_one_top_level_package_and_every_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert zf.read(top_level).decode().split() == ["fngate"]
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"fngate"}
    tracked = subprocess.run(["git", "ls-files", *FOLDERS], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    shipped = {n.removeprefix("fngate/") for n in names}
    # modules, and the data files the code reads at run time (the web console's files among them)
    missing = [p for p in tracked if p.endswith((".py", ".yaml", ".proto", ".html", ".js", ".css")) and p not in shipped]
    assert not missing, f"tracked files that the wheel leaves out (a package missing from pyproject's list?): {missing}"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"fngate"} | {
        "fngate." + ".".join(init.parent.relative_to(REPO).parts) for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py")
    }
    assert found == listed


def _deps_path() -> str:
    """This environment's site-packages, for the dependencies only: on PYTHONPATH its .pth
    files (the editable install's finder among them) are not run, so `fngate` comes from
    the wheel installed in the fresh environment."""
    return sysconfig.get_paths()["purelib"]


def _start(cmd: list[str], data_dir: Path, env: dict[str, str]) -> dict[str, object]:
    ready = data_dir / "ready.json"
    ports = ["--api-port", "0", "--http-port", "0", "--grpc-port", "0", "--admin-port", "0"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--no-samples", "--data-dir", str(data_dir), "--ready-file", str(ready), *ports],
        env=env,
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "fngate serve did not become ready"
            time.sleep(0.1)
        return json.loads(ready.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_installed_wheel_serves_as_script_and_as_module(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": _deps_path()}
    env.pop("FNGATE_ADMIN_KEY", None)
    where = subprocess.run(
        [str(py), "-c", "import fngate.proxy; print(fngate.proxy.__file__)"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), "fngate must come from the installed wheel, not the checkout"
    version = subprocess.run([str(venv / "bin" / "fngate"), "--version"], env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert version.stdout.strip().startswith("fngate ")
    for name, cmd in (("script", [str(venv / "bin" / "fngate")]), ("module", [str(py), "-m", "fngate"])):
        data_dir = tmp_path / name
        data_dir.mkdir()
        ready = _start(cmd, data_dir, env)
        assert str(ready["api_url"]).startswith("http://127.0.0.1:")


def test_the_build_and_the_compile_extra_pin_one_cython_and_list_existing_files() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    build = [r for r in config["build-system"]["requires"] if r.lower().startswith("cython")]
    extra = [r for r in config["project"]["optional-dependencies"]["compile"] if r.lower().startswith("cython")]
    assert build == extra and len(build) == 1
    compiled = config["tool"]["fngate"]["compiled"]
    assert len(compiled) == len(set(compiled))
    assert [p for p in compiled if not (REPO / p).is_file()] == []
