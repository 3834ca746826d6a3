"""The JSON access log: a real gateway, real sample instances and httpx clients (HTTP/1.1 and
h2c); the test reads the file the gateway wrote, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import httpx

from fngate.proxy.config import GatewayConfig
from fngate.proxy.ops.access_log import AccessLog
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.proxy.conftest import FID, VID, Env, route

FIELDS = {
    "time",
    "request_id",
    "function_id",
    "version_id",
    "key_id",
    "client",
    "protocol",
    "status",
    "bytes_in",
    "bytes_out",
    "queue_seconds",
    "instance_seconds",
    "total_seconds",
}


async def _gateway(path: str, **kw) -> Env:
    cfg = GatewayConfig(http_port=0, grpc_port=None, admin_port=0, access_log=path, **kw)
    holder = SnapshotHolder()
    gw = Gateway(cfg, holder, "gw-log")
    await gw.start()
    return Env(gw, holder)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_one_line_per_request_over_http1_and_h2(tmp_path, echo_up) -> None:
    log = tmp_path / "access.log"
    env = await _gateway(str(log))
    try:
        env.publish([route(echo_up.port)])
        async with httpx.AsyncClient() as h1, httpx.AsyncClient(http1=False, http2=True) as h2:
            ok = await h1.post(f"{env.url}/echo?size=5000", headers=env.headers(), content=b"a" * 1234)
            streamed = await h2.post(f"{env.url}/echo?delay=0.2", headers=env.headers(), content=b"b" * 10)
            refused = await h1.get(f"{env.url}/echo", headers=env.headers(key="nvapi-wrong"))
        assert (ok.status_code, streamed.status_code, refused.status_code) == (200, 200, 401)
    finally:
        await env.gw.stop(grace=1)  # the writer's last batch goes out on stop
    first, second, third = _lines(log)
    for line in (first, second, third):
        assert set(line) == FIELDS
        assert line["client"] == "127.0.0.1"
        datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert first["request_id"] == ok.headers["nvcf-reqid"]
    assert (first["function_id"], first["version_id"], first["key_id"]) == (FID, VID, "k1")
    assert (first["protocol"], first["status"], first["bytes_in"]) == ("http/1.1", 200, 1234)
    assert first["bytes_out"] == len(ok.content)
    # the wait for a slot, then the instance's time: two parts of the whole, one after the other
    assert first["queue_seconds"] >= 0 and first["instance_seconds"] > 0
    assert first["queue_seconds"] + first["instance_seconds"] <= first["total_seconds"] + 1e-5
    assert second["protocol"] == "h2" and second["bytes_in"] == 10 and second["request_id"] == streamed.headers["nvcf-reqid"]
    assert second["instance_seconds"] >= 0.2  # the instance waited before its head
    # refused before routing: no function, no key; the ids come only from the routing snapshot
    assert (third["status"], third["function_id"], third["key_id"], third["version_id"]) == (401, "", "", "")
    assert third["request_id"] == refused.headers["nvcf-reqid"] and third["instance_seconds"] == 0


async def test_lines_appear_while_the_gateway_runs(tmp_path, echo_up) -> None:
    """Written by the writer thread every fraction of a second, not only at stop."""
    import asyncio

    log = tmp_path / "access.log"
    env = await _gateway(str(log))
    try:
        env.publish([route(echo_up.port)])
        async with httpx.AsyncClient() as client:
            await client.get(f"{env.url}/echo", headers=env.headers())
        async with asyncio.timeout(10):
            while not log.read_text():
                await asyncio.sleep(0.05)
        assert len(_lines(log)) == 1
    finally:
        await env.gw.stop(grace=1)


def test_a_full_buffer_drops_and_counts_and_never_blocks(tmp_path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), capacity=2)
    entry = (1.0e9, "r", "f", "v", "k", "127.0.0.1", "h2", 200, 1, 2, 0.0, 0.1, 0.2)
    for _ in range(5):  # the writer has not started: only two fit
        log.put(entry)
    assert log.dropped == 3
    assert "fngate_access_log_dropped_total 3" in log.metrics()
    log.start()
    log.close()
    lines = _lines(path)
    assert len(lines) == 2 and lines[0]["time"] == "2001-09-09T01:46:40.000000Z" and lines[0]["total_seconds"] == 0.2


def test_dash_writes_to_standard_output() -> None:
    code = textwrap.dedent(
        """
        from fngate.proxy.ops.access_log import AccessLog
        log = AccessLog("-")
        log.start()
        log.put((0.0, "r1", "f", "v", "k", "::1", "grpc", 200, 0, 0, 0.0, 0.0, 0.001))
        log.close()
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout)["request_id"] == "r1"


async def test_off_by_default_and_the_dropped_counter_on_metrics(tmp_path, echo_up) -> None:
    holder = SnapshotHolder()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=None), holder, "gw")
    assert gw.observability is None and gw.engine.observers is None
    env = await _gateway(str(tmp_path / "a.log"))
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{env.gw.admin_port}/metrics")).text
        assert "fngate_access_log_dropped_total 0" in text
    finally:
        await env.gw.stop(grace=1)
    assert os.path.exists(tmp_path / "a.log")
