"""Backends from the config file: the list and the TOML-table forms, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fngate.backends.factory import build_backends
from fngate.backends.local import LocalBackend
from fngate.backends.static import StaticBackend
from tests.conftest import REPO


def test_default_is_one_local_backend(tmp_path):
    backends = build_backends(None, data_dir=tmp_path)
    assert list(backends) == ["local"] and isinstance(backends["local"], LocalBackend)


def test_list_and_mapping_forms(tmp_path):
    listed = build_backends(
        [{"name": "gpu-box", "type": "local", "startupTimeout": 5}, {"name": "edge", "type": "static"}], data_dir=tmp_path
    )
    assert list(listed) == ["gpu-box", "edge"] and listed["gpu-box"].startup_timeout == 5
    assert isinstance(listed["edge"], StaticBackend)
    mapped = build_backends({"edge": {"kind": "static", "probeInterval": 2}}, data_dir=tmp_path)
    assert mapped["edge"].probe_interval == 2


@pytest.mark.parametrize(
    "entries,message",
    [
        ([{"name": "x", "type": "mainframe"}], "unknown type 'mainframe'"),
        ([{"name": "x", "type": "local", "startup": 5}], "unknown setting 'startup'"),
        ([{"name": "a"}, {"name": "a"}], "the name 'a' is used twice"),
        (["local"], "expected a mapping"),
    ],
)
def test_bad_entries_say_what_is_wrong(tmp_path, entries, message):
    with pytest.raises(ValueError, match=message):
        build_backends(entries, data_dir=tmp_path)


def test_serve_with_a_bad_backend_config_exits_with_one_clear_line(tmp_path):
    config = tmp_path / "fngate.yaml"
    config.write_text("backends:\n  - {name: local, type: local, startupTimeout: 5, bogus: 1}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fngate",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path),
            "--api-port",
            "0",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--admin-port",
            "0",
            "--no-samples",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2  # fngate's exit code for a configuration error
    assert "unknown setting 'bogus'" in done.stderr and "Traceback" not in done.stderr
