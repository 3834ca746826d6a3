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
    "http_status",
    "grpc_code",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
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
    assert (first["http_status"], first["grpc_code"]) == (200, None)  # an HTTP line: no gRPC status
    # not an LLM gateway call: no token usage (tests/e2e/test_llm_gateway.py has the LLM lines)
    assert all(line[f] is None for line in (first, second, third) for f in ("prompt_tokens", "completion_tokens", "total_tokens"))
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
    entry = (1.0e9, "r", "f", "v", "k", "127.0.0.1", "h2", 200, 1, 2, 0.0, 0.1, 0.2, 200, None, None, None, None)
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
        log.put((0.0, "r1", "f", "v", "k", "::1", "grpc", 0, 0, 0, 0.0, 0.0, 0.001, 200, "OK", None, None, None))
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


async def test_bytes_out_counts_the_gateway_s_own_answers(tmp_path, echo_up) -> None:
    """Errors the gateway answers itself (problem+json) count in bytes_out, as the body the
    client got: before routing (401, 404) and after it (no instance to reach)."""
    from tests.support.net import free_port

    log = tmp_path / "access.log"
    env = await _gateway(str(log))
    try:
        env.publish([route(free_port())])  # nothing listens there
        async with httpx.AsyncClient() as client:
            refused = await client.get(f"{env.url}/echo", headers=env.headers(key="nvapi-wrong"))
            unknown = await client.get(f"{env.url}/echo", headers={"authorization": "Bearer x"})
            unreachable = await client.get(f"{env.url}/echo", headers=env.headers())
        assert (refused.status_code, unknown.status_code) == (401, 404)
        assert unreachable.status_code >= 500
    finally:
        await env.gw.stop(grace=1)
    lines = {line["request_id"]: line for line in _lines(log)}
    for answer in (refused, unknown, unreachable):
        line = lines[answer.headers["nvcf-reqid"]]
        assert line["status"] == answer.status_code
        assert line["bytes_out"] == len(answer.content) > 0
    assert lines[unreachable.headers["nvcf-reqid"]]["function_id"] == FID


async def test_lines_for_what_the_gateway_answers_itself(tmp_path, echo_up) -> None:
    """Health checks, CORS preflights, pexec status polls and the driver's refusal of a
    request it cannot parse each get their line, with the body bytes the gateway sent."""
    import asyncio

    log = tmp_path / "access.log"
    env = await _gateway(
        str(log), output_dir=str(tmp_path / "out"), asset_dir=str(tmp_path / "assets"), large_results_dir=str(tmp_path / "large")
    )
    try:
        env.publish([route(echo_up.port, inference_url="/infer")])
        auth = {"authorization": env.headers()["Authorization"]}
        async with httpx.AsyncClient(timeout=30) as client:
            health = await client.get(f"{env.url}/health")
            preflight = await client.options(
                f"{env.url}/v2/nvcf/pexec/status/x", headers={"origin": "https://ui.example", "access-control-request-method": "GET"}
            )
            started = await client.post(
                f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"abc", headers={**auth, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "1.5"}
            )
            assert started.status_code == 202
            req_id = started.headers["nvcf-reqid"]
            poll = await client.get(f"{env.url}/v2/nvcf/pexec/status/{req_id}", headers={**auth, "NVCF-POLL-SECONDS": "5"})
            gone = await client.get(f"{env.url}/v2/nvcf/pexec/status/{req_id}", headers=auth)
        assert (health.status_code, preflight.status_code, poll.status_code, gone.status_code) == (200, 200, 200, 404)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(env.url.rsplit(":", 1)[1]))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n")  # not HTTP: the driver refuses it
        refusal = await reader.read()
        writer.close()
        assert refusal.startswith(b"HTTP/1.1 400")
    finally:
        await env.gw.stop(grace=1)
    lines = _lines(log)
    by_status = {}
    for line in lines:
        assert set(line) == FIELDS
        by_status.setdefault(line["status"], []).append(line)
    health_line = next(
        x for x in lines if x["request_id"] not in (req_id,) and x["bytes_out"] == len(health.content) and x["status"] == 200
    )
    assert health_line["protocol"] == "http/1.1" and health_line["client"] == "127.0.0.1"
    assert any(x["status"] == 200 and x["bytes_out"] == 0 and x["function_id"] == "" for x in lines)  # the preflight
    polled = [x for x in lines if x["request_id"] == req_id and x["bytes_out"] == len(poll.content)]
    assert polled, lines  # the poll that got the result: the polled request's id, its function and the key
    assert (polled[-1]["status"], polled[-1]["function_id"], polled[-1]["version_id"], polled[-1]["key_id"]) == (200, FID, VID, "k1")
    gone_line = next(x for x in lines if x["request_id"] == gone.headers["nvcf-reqid"])
    assert gone_line["status"] == 404 and gone_line["bytes_out"] == len(gone.content) > 0
    body = refusal.split(b"\r\n\r\n", 1)[1]
    rejected = next(x for x in lines if x["status"] == 400)
    assert rejected["bytes_out"] == len(body) > 0 and rejected["client"] == "127.0.0.1"
