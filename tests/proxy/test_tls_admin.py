"""TLS with ALPN (h2 and http/1.1 on one port) and the admin listener."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest

from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway

from .conftest import Env, route


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return str(d / "cert.pem"), str(d / "key.pem")


async def test_tls_alpn_serves_h2_and_http11(cert, echo_up):
    holder = SnapshotHolder()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=None, tls_cert=cert[0], tls_key=cert[1]), holder, "gw-tls")
    await gw.start()
    try:
        env = Env(gw, holder)
        env.publish([route(echo_up.port)])
        ctx = ssl.create_default_context(cafile=cert[0])
        url = f"https://127.0.0.1:{gw.http_port}/tls"
        async with httpx.AsyncClient(verify=ctx, http2=True) as c:
            r = await c.get(url, headers=env.headers())
            assert r.http_version == "HTTP/2" and r.status_code == 200
            got = {k.lower(): v for k, v in r.json()["headers"].items()}
            assert got["x-forwarded-proto"] == "https" and got["via"] == "2 fngate"
        async with httpx.AsyncClient(verify=ctx) as c:
            r = await c.get(url, headers=env.headers())
            assert r.http_version == "HTTP/1.1" and r.status_code == 200
    finally:
        await gw.stop(1)


async def test_admin_metrics_health_and_ready(env, echo_up):
    admin = f"http://127.0.0.1:{env.gw.admin_port}"
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{admin}/healthz")).status_code == 200
        assert (await c.get(f"{admin}/readyz")).status_code == 503  # no routing snapshot yet
        env.publish([route(echo_up.port)])
        assert (await c.get(f"{admin}/readyz")).json() == {"ready": True, "routingVersion": 1}
        await c.get(f"{env.url}/", headers=env.headers())
        await c.get(f"{env.url}/", headers=env.headers(key="bad"))
        text = (await c.get(f"{admin}/metrics")).text
    from .conftest import FID

    assert f'fngate_requests_total{{function_id="{FID}",status="200"}} 1' in text
    assert 'fngate_requests_total{function_id="unknown",status="401"} 1' in text  # a bad key: no label of its own
    assert f'fngate_request_duration_seconds_count{{function_id="{FID}"}} 1' in text
    assert 'fngate_request_duration_seconds_count{function_id="unknown"} 1' in text
    assert "fngate_in_flight_requests 0" in text


def test_gateway_lifts_its_open_files_limit_to_the_hard_limit():
    """A gateway started under a low soft limit (common: 1024) must not stay there."""
    import resource
    import subprocess
    import sys

    code = (
        "import resource; from proxy.server import raise_open_files_limit;"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE);"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard));"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    lifted, now, hard = map(int, out)
    expected = hard if hard != resource.RLIM_INFINITY else now
    assert lifted == now == expected


def test_gateway_heap_tuning_leaves_an_operator_setting_alone():
    """tune_malloc applies on glibc, and never when the operator chose their own values."""
    import os
    import subprocess
    import sys

    code = "from proxy.server import tune_malloc; print(tune_malloc())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "True"
    env["MALLOC_TRIM_THRESHOLD_"] = "1048576"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "False"
