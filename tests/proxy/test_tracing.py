"""Traces: a real gateway exporting over OTLP/HTTP to a real receiver (tests/support/otlp.py),
real sample instances that echo the headers they got, real httpx clients (HTTP/1.1 and h2c)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import httpx
import pytest

from fngate.proxy.calls.tracing import traces_url
from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.proxy.conftest import FID, VID, Env, route
from tests.support.otlp import OtlpReceiver, tree

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
PHASES = ["connect", "instance", "queue_wait", "route_and_auth"]


@pytest.fixture
async def receiver():
    r = await OtlpReceiver().start()
    yield r
    await r.stop()


async def _gateway(receiver: OtlpReceiver, **kw) -> Env:
    cfg = GatewayConfig(http_port=0, grpc_port=None, admin_port=None, otlp_endpoint=receiver.url, **kw)
    holder = SnapshotHolder()
    gw = Gateway(cfg, holder, "gw-trace")
    await gw.start()
    return Env(gw, holder)


def _traceparent(echoed: dict) -> tuple[str, str, str, str]:
    version, trace_id, parent_id, flags = echoed["headers"]["traceparent"].split("-")
    return version, trace_id, parent_id, flags


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
async def test_one_request_gives_the_span_tree_and_the_instance_the_gateways_traceparent(receiver, echo_up, http2) -> None:
    env = await _gateway(receiver)
    try:
        env.publish([route(echo_up.port)])
        headers = env.headers(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", tracestate="vendor=abc")
        async with httpx.AsyncClient(http1=not http2, http2=http2) as client:
            r = await client.post(f"{env.url}/echo", headers=headers, content=b"x" * 1000)
        assert r.status_code == 200 and r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        echoed = r.json()
    finally:
        await env.gw.stop(grace=1)  # the exporter's last batch goes out on stop
    spans = await receiver.wait_for(6)
    assert receiver.content_types == {"application/x-protobuf"}
    assert tree(spans) == {"": ["fngate.invoke"], "fngate.invoke": PHASES, "instance": ["streaming", "time_to_first_byte"]}
    by_name = {s.name: s for s in spans}
    root, instance = by_name["fngate.invoke"], by_name["instance"]
    # the client's trace goes on: the root is a child of the client's span
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}
    assert root.parent_id == CLIENT_SPAN and root.service == "fngate"
    assert root.kind == 2 and instance.kind == 3  # SERVER, CLIENT
    assert root.attributes["fngate.function_id"] == FID and root.attributes["fngate.version_id"] == VID
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["fngate.request_id"] == r.headers["nvcf-reqid"]
    assert root.attributes["fngate.protocol"] == ("h2" if http2 else "http/1.1")
    # OpenTelemetry's semantic conventions: what a trace backend groups and filters by
    assert root.attributes["http.request.method"] == "POST" and root.attributes["url.path"] == "/echo"
    assert root.attributes["server.address"] == env.host()  # the Host the client asked for (no port in it here)
    assert root.attributes["network.protocol.version"] == ("2" if http2 else "1.1")
    assert root.attributes["client.address"] == "127.0.0.1" and root.attributes["url.scheme"] == "http"
    # the instance span names the instance it went to
    assert (instance.attributes["server.address"], instance.attributes["server.port"]) == ("127.0.0.1", echo_up.port)
    # the instance saw the gateway's instance span as its parent, and the client's tracestate
    assert _traceparent(echoed) == ("00", CLIENT_TRACE, instance.span_id, "01")
    assert echoed["headers"]["tracestate"] == "vendor=abc"
    # phases in order, inside the root
    order = ["route_and_auth", "queue_wait", "connect", "time_to_first_byte", "streaming"]
    for earlier, later in itertools.pairwise(order):
        assert by_name[earlier].end_ns <= by_name[later].start_ns + 1000, (earlier, later)
    assert all(root.start_ns <= s.start_ns and s.end_ns <= root.end_ns for s in spans)


async def test_without_a_traceparent_a_new_trace_starts_and_reaches_the_instance(receiver, echo_up) -> None:
    env = await _gateway(receiver)
    try:
        env.publish([route(echo_up.port)])
        async with httpx.AsyncClient() as client:
            r = await client.get(f"{env.url}/echo", headers=env.headers(traceparent="00-zz-not-valid"))
        echoed = r.json()
    finally:
        await env.gw.stop(grace=1)
    spans = await receiver.wait_for(6)
    root = next(s for s in spans if s.name == "fngate.invoke")
    assert root.parent_id == "" and root.trace_id != "0" * 32
    _, trace_id, _, flags = _traceparent(echoed)
    assert trace_id == root.trace_id and int(flags, 16) & 1  # sampled (0x02 may say the trace id is random)


async def test_a_refused_request_is_a_root_span_with_its_status(receiver, echo_up) -> None:
    env = await _gateway(receiver)
    try:
        env.publish([route(echo_up.port)])
        async with httpx.AsyncClient() as client:
            r = await client.get(f"{env.url}/echo", headers=env.headers(key="nvapi-wrong"))
        assert r.status_code == 401
    finally:
        await env.gw.stop(grace=1)
    spans = await receiver.wait_for(2)
    assert tree(spans) == {"": ["fngate.invoke"], "fngate.invoke": ["route_and_auth"]}
    root = next(s for s in spans if s.name == "fngate.invoke")
    assert root.attributes["http.response.status_code"] == 401 and root.attributes["fngate.function_id"] == ""


async def test_ratio_zero_records_nothing_but_still_passes_a_trace_context_on(receiver, echo_up) -> None:
    env = await _gateway(receiver, trace_sample_ratio=0.0)
    try:
        env.publish([route(echo_up.port)])
        async with httpx.AsyncClient() as client:
            r = await client.get(f"{env.url}/echo", headers=env.headers())
        echoed = r.json()
    finally:
        await env.gw.stop(grace=1)
    assert receiver.spans == []
    _, trace_id, parent_id, flags = _traceparent(echoed)
    assert not int(flags, 16) & 1 and len(trace_id) == 32 and len(parent_id) == 16  # not sampled


async def test_a_client_s_sampled_parent_is_followed_whatever_the_ratio(receiver, echo_up) -> None:
    env = await _gateway(receiver, trace_sample_ratio=0.0)
    try:
        env.publish([route(echo_up.port)])
        async with httpx.AsyncClient() as client:
            await client.get(f"{env.url}/echo", headers=env.headers(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
    finally:
        await env.gw.stop(grace=1)
    spans = await receiver.wait_for(6)
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}


def test_tracing_off_loads_no_opentelemetry_and_gives_calls_no_observer() -> None:
    """The hot path with tracing and the access log off: no observer object, and the
    OpenTelemetry packages are never imported (a fresh interpreter, a started gateway)."""
    code = textwrap.dedent(
        """
        import asyncio, json, sys
        from fngate.proxy.config import GatewayConfig
        from fngate.proxy.routing.snapshot import SnapshotHolder
        from fngate.proxy.server import Gateway

        async def main():
            gw = Gateway(GatewayConfig(http_port=0, grpc_port=0, admin_port=0), SnapshotHolder(), "gw")
            await gw.start()
            out = {"engine": gw.engine.observers is None, "grpc": gw.grpc.observers is None}
            await gw.stop(grace=0)
            out["otel"] = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
            print(json.dumps(out))

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == {"engine": True, "grpc": True, "otel": []}


def test_the_endpoint_gets_otlp_s_path_and_a_bad_one_is_refused() -> None:
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp/v1/traces") == "https://c.example/otlp/v1/traces"
    with pytest.raises(ValueError, match="http"):
        traces_url("collector:4317")
    with pytest.raises(ValueError, match=r"0\.\.1"):
        GatewayConfig(trace_sample_ratio=1.5)
