"""The gRPC scenario's nginx row: nginx's own gRPC proxy (`grpc_pass`) in front of the
grpcio sample instance, as bench/scenarios.py starts it, carries real unary and
streaming calls (the harness's status probe, a grpcio client) and stops cleanly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fngate.bench.grpc_load import GrpcEcho, probe
from fngate.bench.nginx import Nginx
from fngate.proxy.config import LOOPBACK

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="needs nginx (make bench installs it)"
)


def test_nginx_grpc_pass_relays_unary_and_streaming_calls(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    echo = GrpcEcho(None, logs)
    try:
        nginx = Nginx.grpc_proxy(tmp_path, echo.port, None, logs)
        try:
            probe(f"{LOOPBACK}:{nginx.port}", {}, replies=5)
            assert "grpc_pass grpc://grpc_up;" in (tmp_path / "nginx-grpc-proxy" / "nginx.conf").read_text()
        finally:
            nginx.stop()
        assert nginx.proc.popen.poll() is not None
    finally:
        echo.stop()
