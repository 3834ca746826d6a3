"""gRPC calls take the same shared parts as HTTP requests: the per-connection slot cap,
the minimum request-body rate, the protected-header rule, the request metrics, the
rapid-reset guard and the retry on another instance."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from fngate.backends.samples import grpc_echo_pb2 as pb
from fngate.proxy.routing.snapshot import Endpoint, VersionRoute
from tests.proxy.grpc.conftest import running_gateway
from tests.proxy.grpc.gateway import (
    F_IO,
    F_ONE,
    FUNCTION_OF,
    V_LIB,
    grpc_route,
    grpcio_channel,
    grpcio_stub,
    metadata,
    publish_routes,
)
from tests.proxy.grpc.rawh2 import RawClient, grpc_headers
from tests.support.net import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

F_CAPPED = "30000000-0000-4000-8000-0000000000cc"
COLLECT = "/fngate.echo.v1.Echo/EchoCollect"


async def test_one_client_connection_cannot_take_every_slot(instances):
    """Three slots, a cap of two per connection: one client's calls over one connection
    hold two, so another client's call is served at once instead of queueing behind them."""
    # each call takes a slot (calls of one session share one): the cap is about calls routed on their own
    async with running_gateway(instances, max_slots_per_connection=2, grpc_sessions=False) as gw:
        publish_routes(gw.holder, grpc_route(F_CAPPED, V_LIB, instances["grpclib"].port, max_concurrency=3))
        ended: list[str] = []

        async def call(stub, name: str, delay: float) -> None:
            await stub.Echo(pb.EchoRequest(message=name, delay_s=delay), metadata=metadata(F_CAPPED))
            ended.append(name)

        own_connection = ("grpc.use_local_subchannel_pool", 1)  # grpcio channels share connections by default
        async with grpcio_channel(gw.port) as hog_channel, grpcio_channel(gw.port, own_connection) as other_channel:
            hog = grpcio_stub(hog_channel)
            await hog.Echo(pb.EchoRequest(), metadata=metadata(F_CAPPED))  # the channel's one connection is up
            hogging = [asyncio.create_task(call(hog, f"hog-{i}", 1.0)) for i in range(4)]
            await asyncio.sleep(0.3)
            assert gw.gw.limiter.capped_connections() == 1  # the hog holds its two slots, two calls wait their turn
            await call(grpcio_stub(other_channel), "other", 0.0)
            assert ended == ["other"]  # without the cap the hog held all three slots and "other" queued
            await asyncio.gather(*hogging)
        assert sorted(ended) == ["hog-0", "hog-1", "hog-2", "hog-3", "other"]  # the ones past the cap ran later
        assert gw.gw.limiter.capped_connections() == 0


async def test_a_trickling_request_stream_is_cut_and_its_slot_freed(instances):
    """A client streaming its request at 1 byte every 2 s gets DEADLINE_EXCEEDED once the
    rate windows show it, and the function's only slot serves the next call."""
    config = {"client_body_min_rate": 100, "client_body_rate_window": 1.0, "client_body_rate_grace": 1.0}
    async with running_gateway(instances, **config, grpc_sessions=False) as gw:  # the call holds its own slot
        client = await RawClient.connect(gw.port)
        try:
            slow = client.start(
                grpc_headers(COLLECT, extra=metadata(F_ONE)), b"\x00\x00\x00\x00\x64", end=False
            )  # a 100-byte message follows

            async def drip() -> None:
                while not slow.done.done():
                    await asyncio.sleep(2)
                    if not slow.done.done():
                        client.send(slow, b"x", end=False)

            dripping = asyncio.create_task(drip())
            await asyncio.wait_for(slow.done, 10)
            dripping.cancel()
            assert slow.grpc_status == 4, (slow.headers, slow.trailers)  # DEADLINE_EXCEEDED
            assert "slower than 100 bytes/s" in slow.headers["grpc-message"]
        finally:
            await client.close()
        async with grpcio_channel(gw.port) as ch:  # F_ONE has one slot: the cut call gave it back
            reply = await asyncio.wait_for(grpcio_stub(ch).Echo(pb.EchoRequest(message="next"), metadata=metadata(F_ONE)), 5)
        assert reply.message == "next"


SPOOFED = [
    ("nvcf_sub", "victim"),
    ("nvcf-ncaid", "victim-account"),
    ("nvcf_function_id", "10000000-0000-4000-8000-00000000dead"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=6.6.6.6"),
    ("x-real-ip", "6.6.6.6"),
    ("nvcf-reqid", "chosen-by-the-client"),
]


@pytest.mark.parametrize("server", ["grpcio", "grpclib"])
async def test_metadata_that_names_a_protected_header_never_reaches_the_instance(gateway, server):
    md = [*metadata(FUNCTION_OF[server]), *SPOOFED, ("x-custom", "kept"), ("x_custom_underscored", "kept too")]
    async with grpcio_channel(gateway.port) as ch:
        reply = await grpcio_stub(ch).Echo(pb.EchoRequest(message="who am i"), metadata=md)
    seen = dict(reply.metadata)
    for name, _ in SPOOFED:
        assert name not in seen or name == "nvcf-reqid", (name, seen)
        assert name.replace("_", "-") not in seen or name == "nvcf-reqid", (name, seen)
    assert seen["nvcf-reqid"] != "chosen-by-the-client"  # the gateway's own request id, once
    assert str(uuid.UUID(seen["nvcf-reqid"])) == seen["nvcf-reqid"]
    assert (seen["x-custom"], seen["x_custom_underscored"]) == ("kept", "kept too")
    assert "authorization" not in seen


async def _metrics(gw) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.gw.admin_port}/metrics") as resp:
        return await resp.text()


async def test_calls_are_counted_with_the_http_requests_and_never_labelled_by_unauthenticated_input(gateway):
    intruder = str(uuid.uuid4())
    async with grpcio_channel(gateway.port) as ch:
        stub = grpcio_stub(ch)
        await stub.Echo(pb.EchoRequest(), metadata=metadata(F_IO))
        for key in (None, "wrong"):  # no key, a bad key: refused before any function is known
            with pytest.raises(Exception):  # noqa: B017  # grpc.aio.AioRpcError
                await stub.Echo(pb.EchoRequest(), metadata=metadata(intruder, key=key))
    text = await _metrics(gateway)
    assert f'fngate_requests_total{{function_id="{F_IO}",status="200"}} 1' in text
    assert 'fngate_requests_total{function_id="unknown",status="401"} 2' in text
    assert intruder not in text  # no series from what an unauthenticated client sent
    assert f'fngate_request_duration_seconds_count{{function_id="{F_IO}"}} 1' in text  # the routed call, by its function
    assert 'fngate_request_duration_seconds_count{function_id="unknown"} 2' in text
    assert "fngate_in_flight_requests 0" in text
    assert f'fngate_grpc_calls_total{{function_id="{F_IO}",grpc_status="OK"}} 1' in text
    assert 'fngate_grpc_calls_total{function_id="unknown",grpc_status="UNAUTHENTICATED"} 2' in text


async def test_calls_reset_in_the_packet_that_opened_them_never_reach_the_instance(gateway, instances):
    """Rapid reset (CVE-2023-44487) over gRPC: HEADERS and RST_STREAM in one write take no
    slot, no queue place and no instance stream; the connection still carries calls."""
    port = instances["grpclib"].port
    async with grpcio_channel(port) as ch:  # straight to the instance
        before = await grpcio_stub(ch).Stats(pb.StatsRequest())
    client = await RawClient.connect(gateway.port)
    try:
        headers = grpc_headers("/fngate.echo.v1.Echo/Echo", extra=metadata(FUNCTION_OF["grpclib"]))
        for _ in range(50):
            sid = client.h2.get_next_available_stream_id()
            client.h2.send_headers(sid, headers)
            client.h2.reset_stream(sid)
        client.flush()  # one write: every stream opened and reset in the same batch
        await asyncio.sleep(0.3)
        assert not gateway.handler.calls and gateway.gw.limiter.queued_total() == 0
        ok = client.start(headers, b"\x00\x00\x00\x00\x00")
        await asyncio.wait_for(ok.done, 5)
        assert ok.grpc_status == 0
    finally:
        await client.close()
    async with grpcio_channel(port) as ch:
        after = await grpcio_stub(ch).Stats(pb.StatsRequest())
    assert after.started == before.started + 1  # only the call that was not reset


@pytest.mark.grpc_per_call  # 20 calls, 20 picks (a session picks once: test_sessions.py)
async def test_an_unreachable_instance_is_retried_on_another(gateway, instances):
    """As for HTTP: a call whose instance refuses the connection takes a slot on another
    instance of the version, once, instead of failing UNAVAILABLE."""
    endpoints = (Endpoint("dead-1", "127.0.0.1", free_port()), Endpoint("live-1", "127.0.0.1", instances["grpclib"].port))
    route = VersionRoute(F_CAPPED, V_LIB, "two", "ACTIVE", inference_url="/grpc", grpc=True, endpoints=endpoints, max_concurrency=100)
    publish_routes(gateway.holder, route)
    async with grpcio_channel(gateway.port) as ch:
        stub = grpcio_stub(ch)
        replies = [await stub.Echo(pb.EchoRequest(message=str(i)), metadata=metadata(F_CAPPED)) for i in range(20)]
    assert [r.message for r in replies] == [str(i) for i in range(20)]  # each one served, none UNAVAILABLE
    text = await _metrics(gateway)
    retries = int(next(line.split()[-1] for line in text.splitlines() if line.startswith("fngate_retries_total")))
    assert retries >= 1  # some calls were sent to the dead instance first (20 random picks of two)
    assert f'fngate_upstream_errors_total{{kind="connect"}} {retries}' in text
