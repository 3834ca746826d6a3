"""Deadlines, cancellation both ways, resets, flow control and bad framing through the relay."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpclib.client import Channel

from fngate.backends.samples import grpc_echo_pb2 as pb
from tests.proxy.grpc.conftest import running_gateway, start_echo
from tests.proxy.grpc.gateway import (
    F_IO,
    FUNCTION_OF,
    grpc_route,
    grpcio_channel,
    grpcio_stub,
    grpclib_stub,
    instance_stats,
    metadata,
    publish_routes,
    wait_for_stats,
)
from tests.proxy.grpc.rawh2 import RawClient, RawUpstream, grpc_frame, grpc_headers

pytestmark = pytest.mark.asyncio(loop_scope="module")

F_RAW = "30000000-0000-4000-8000-000000000001"
V_RAW = "40000000-0000-4000-8000-000000000001"
ECHO = "/fngate.echo.v1.Echo/Echo"


@pytest.mark.parametrize("server", ["grpcio", "grpclib"])
async def test_client_deadline_ends_the_call_and_cancels_the_instance(gateway, instances, server):
    port = instances[server].port
    before = await instance_stats(port)
    async with grpcio_channel(gateway.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(delay_s=5), metadata=metadata(FUNCTION_OF[server]), timeout=0.4)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stats = await wait_for_stats(port, lambda s: s.cancelled > before.cancelled)
    assert stats.active == 0


@pytest.mark.parametrize("client", ["grpcio", "grpclib"])
@pytest.mark.parametrize("server", ["grpcio", "grpclib"])
async def test_client_cancel_reaches_the_instance(gateway, instances, client, server):
    port = instances[server].port
    before = await instance_stats(port)
    request = pb.EchoRequest(message="tick", repeat=100, delay_s=0.05)
    md = metadata(FUNCTION_OF[server])
    if client == "grpcio":
        async with grpcio_channel(gateway.port) as ch:
            call = grpcio_stub(ch).EchoStream(request, metadata=md)
            assert (await call.read()).index == 0
            call.cancel()
    else:
        channel = Channel("127.0.0.1", gateway.port)
        try:
            async with grpclib_stub(channel).EchoStream.open(metadata=md) as st:
                await st.send_message(request, end=True)
                assert (await st.recv_message()).index == 0
                await st.cancel()
        finally:
            channel.close()
    stats = await wait_for_stats(port, lambda s: s.cancelled > before.cancelled and s.active == 0)
    assert stats.cancelled == before.cancelled + 1
    assert not gateway.handler.calls  # nothing left behind in the gateway


async def test_instance_reset_is_passed_to_the_client(gateway):
    upstream = RawUpstream("reset:11")  # ENHANCE_YOUR_CALM
    publish_routes(gateway.holder, grpc_route(F_RAW, V_RAW, await upstream.start()))
    client = await RawClient.connect(gateway.port)
    try:
        result = client.start(grpc_headers(ECHO, extra=metadata(F_RAW)), grpc_frame(b""))
        await asyncio.wait_for(result.done, 5)
        assert result.reset_code == 11
    finally:
        await client.close()
        await upstream.stop()


async def test_request_headers_reaching_the_instance(gateway):
    upstream = RawUpstream("ok")
    publish_routes(gateway.holder, grpc_route(F_RAW, V_RAW, await upstream.start()))
    client = await RawClient.connect(gateway.port)
    try:
        extra = [*metadata(F_RAW), ("grpc-timeout", "20S"), ("x-custom", "kept")]
        result = client.start(grpc_headers(ECHO, extra=extra), grpc_frame(b""))
        await asyncio.wait_for(result.done, 5)
        assert result.grpc_status == 0
    finally:
        await client.close()
        await upstream.stop()
    seen = upstream.requests[-1]
    assert "authorization" not in seen
    assert (seen["x-custom"], seen["function-id"], seen["te"]) == ("kept", F_RAW, "trailers")
    assert seen["nvcf-reqid"] == result.headers["nvcf-reqid"]
    # grpc-timeout is passed on as the time left, never more than the client asked for
    assert (
        seen["grpc-timeout"].endswith(("m", "u", "n"))
        and 19_000 < int(seen["grpc-timeout"][:-1]) / {"m": 1, "u": 1e3, "n": 1e6}[seen["grpc-timeout"][-1]] <= 20_000
    )


async def test_more_upstream_connections_only_past_the_instance_stream_limit(gateway):
    upstream = RawUpstream("slow", max_streams=2)
    publish_routes(gateway.holder, grpc_route(F_RAW, V_RAW, await upstream.start()))
    try:
        async with grpcio_channel(gateway.port) as ch:
            stub = grpcio_stub(ch)
            calls = [stub.Echo(pb.EchoRequest(), metadata=metadata(F_RAW)) for _ in range(5)]
            replies = await asyncio.gather(*calls)
            assert len(replies) == 5
            assert upstream.connections == 3  # ceil(5 / 2): reuse first, dial only when full
            await stub.Echo(pb.EchoRequest(), metadata=metadata(F_RAW))
            assert upstream.connections == 3  # idle connections are reused
    finally:
        await upstream.stop()


async def test_slow_receiver_holds_back_the_instance(gateway, instances):
    port = instances["grpclib"].port
    size, count = 1 << 20, 40
    before = await instance_stats(port)
    channel = Channel("127.0.0.1", gateway.port)
    try:
        async with grpclib_stub(channel).EchoStream.open(metadata=metadata(FUNCTION_OF["grpclib"])) as st:
            await st.send_message(pb.EchoRequest(repeat=count, response_size=size), end=True)
            assert (await st.recv_message()).index == 0
            await asyncio.sleep(1.0)  # stop reading: windows close from the client back to the instance
            stats = await instance_stats(port)
            assert stats.completed == before.completed and stats.active == 1  # the instance cannot finish
            buffered = sum(call.held_response_bytes for call in gateway.handler.calls)
            assert buffered <= 2 * (1 << 20)  # the gateway holds at most about a window
            rest = [m.index async for m in st]
        assert rest == list(range(1, count))
    finally:
        channel.close()


@pytest.mark.parametrize(
    "body,why",
    [
        (b"\x07\x00\x00\x00\x01x", "invalid compressed flag"),
        (b"\x00\x00\x00\x00\x10abc", "stream ends inside a message"),
    ],
)
async def test_bad_framing_resets_only_that_stream(gateway, body, why):
    client = await RawClient.connect(gateway.port)
    try:
        bad = client.start(grpc_headers(ECHO, extra=metadata(F_IO)), body)
        await asyncio.wait_for(bad.done, 5)
        assert bad.reset_code == 1, why  # PROTOCOL_ERROR
        good = client.start(grpc_headers(ECHO, extra=metadata(F_IO)), grpc_frame(pb.EchoRequest(message="ok").SerializeToString()))
        await asyncio.wait_for(good.done, 5)
        assert good.grpc_status == 0 and pb.EchoReply.FromString(bytes(good.data[5:])).message == "ok"
    finally:
        await client.close()


async def test_instance_dying_mid_stream_ends_the_call_unavailable(gateway):
    instance = await start_echo("grpclib")
    publish_routes(gateway.holder, grpc_route(F_RAW, V_RAW, instance.port))
    try:
        async with grpcio_channel(gateway.port) as ch:
            call = grpcio_stub(ch).EchoStream(pb.EchoRequest(repeat=100, delay_s=0.05), metadata=metadata(F_RAW))
            assert (await call.read()).index == 0
            instance.proc.kill()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                while True:
                    if await call.read() == grpc.aio.EOF:
                        break
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await instance.stop()


async def test_finished_calls_leave_nothing_on_the_client_connection(instances):
    """Completed gRPC streams are forgotten by the connection: an idle one is closed
    after keepalive_timeout, as for HTTP/2 requests."""
    async with running_gateway(instances, keepalive_timeout=0.5) as gw:
        client = await RawClient.connect(gw.port)
        try:
            for text in ("a", "b"):
                request = grpc_frame(pb.EchoRequest(message=text).SerializeToString())
                result = client.start(grpc_headers(ECHO, extra=metadata(F_IO)), request)
                await asyncio.wait_for(result.done, 5)
                assert result.grpc_status == 0
            await asyncio.wait_for(client.closed, 3)  # closed by the gateway's idle timer
        finally:
            await client.close()


async def test_streams_past_the_concurrency_limit_are_refused_one_by_one(instances):
    """Streams a client opens before it acknowledged SETTINGS_MAX_CONCURRENT_STREAMS get
    REFUSED_STREAM one by one (nghttp2; a client that acknowledged the limit and still
    exceeds it loses its connection: see test_a_client_past_its_acknowledged_stream_limit...)."""
    message = grpc_frame(pb.EchoRequest(message="m").SerializeToString())
    async with running_gateway(instances, h2_max_concurrent_streams=3) as gw:
        client = await RawClient.connect(gw.port, ignore_stream_limit=True, settle=False)
        try:
            open_calls = [client.start(grpc_headers(ECHO, extra=metadata(F_IO)), end=False) for _ in range(3)]
            refused = client.start(grpc_headers(ECHO, extra=metadata(F_IO)), end=False)
            await asyncio.wait_for(refused.done, 5)
            assert refused.reset_code == 7  # REFUSED_STREAM: safe for the client to retry
            for call in open_calls:  # the streams within the limit are unaffected
                client.send(call, message)
                await asyncio.wait_for(call.done, 5)
                assert call.grpc_status == 0
            again = client.start(grpc_headers(ECHO, extra=metadata(F_IO)), message)
            await asyncio.wait_for(again.done, 5)
            assert again.grpc_status == 0
        finally:
            await client.close()


async def test_a_client_past_its_acknowledged_stream_limit_loses_only_its_connection(instances):
    message = grpc_frame(pb.EchoRequest(message="m").SerializeToString())
    async with running_gateway(instances, h2_max_concurrent_streams=3) as gw:
        bystander = await RawClient.connect(gw.port)
        client = await RawClient.connect(gw.port, ignore_stream_limit=True)
        try:
            for _ in range(4):
                client.start(grpc_headers(ECHO, extra=metadata(F_IO)), end=False)
            await asyncio.wait_for(client.closed, 5)  # GOAWAY PROTOCOL_ERROR, then close
            call = bystander.start(grpc_headers(ECHO, extra=metadata(F_IO)), message)
            await asyncio.wait_for(call.done, 5)
            assert call.grpc_status == 0
        finally:
            await client.close()
            await bystander.close()


async def test_oversized_metadata_fails_only_that_call(gateway):
    bystander = await RawClient.connect(gateway.port)
    offender = await RawClient.connect(gateway.port)
    message = grpc_frame(pb.EchoRequest(message="m").SerializeToString())
    try:
        slow = bystander.start(grpc_headers(ECHO, extra=metadata(F_IO)), end=False)
        huge = [(f"x-meta-{i}", "a" * 700) for i in range(100)]  # 70 kB of metadata, over the 64 kB limit
        big = offender.start(grpc_headers(ECHO, extra=[*metadata(F_IO), *huge]), message)
        await asyncio.wait_for(big.done, 5)
        assert big.grpc_status == 8  # RESOURCE_EXHAUSTED, for this call only
        # the offender's connection (its HPACK state included) still carries calls
        again = offender.start(grpc_headers(ECHO, extra=metadata(F_IO)), message)
        await asyncio.wait_for(again.done, 5)
        assert again.grpc_status == 0 and not offender.closed.done()
        bystander.send(slow, message)
        await asyncio.wait_for(slow.done, 5)
        assert slow.grpc_status == 0
    finally:
        await offender.close()
        await bystander.close()


async def test_metadata_past_the_hard_cap_closes_only_that_connection(gateway):
    bystander = await RawClient.connect(gateway.port)
    offender = await RawClient.connect(gateway.port)
    message = grpc_frame(pb.EchoRequest(message="m").SerializeToString())
    try:
        slow = bystander.start(grpc_headers(ECHO, extra=metadata(F_IO)), end=False)
        huge = [(f"x-meta-{i}", "a" * 1000) for i in range(300)]  # 300 kB: past 4x the limit
        offender.start(grpc_headers(ECHO, extra=[*metadata(F_IO), *huge]), message)
        await asyncio.wait_for(offender.closed, 5)  # GOAWAY: the decoder stopped half-way
        bystander.send(slow, message)
        await asyncio.wait_for(slow.done, 5)
        assert slow.grpc_status == 0
    finally:
        await offender.close()
        await bystander.close()


async def test_graceful_stop_lets_calls_in_progress_finish(instances):
    async with running_gateway(instances) as gw, grpcio_channel(gw.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(message="finish me", delay_s=0.5), metadata=metadata(F_IO))
        await asyncio.sleep(0.2)
        await gw.gw.stop(grace=5.0)
        reply = await call
    assert reply.message == "finish me"


async def test_stop_after_the_grace_period_ends_calls_unavailable(instances):
    async with running_gateway(instances) as gw, grpcio_channel(gw.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(delay_s=30), metadata=metadata(F_IO))
        await asyncio.sleep(0.2)
        assert not await gw.handler.drain(0.1)  # the call is still running
        await gw.gw.stop(grace=0.2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call, 5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "the gateway is shutting down"  # the gateway's status, not a lost connection


async def test_drain_returns_once_the_last_call_ended(gateway):
    async with grpcio_channel(gateway.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(message="soon", delay_s=0.3), metadata=metadata(F_IO))
        await asyncio.sleep(0.1)
        assert gateway.handler.calls
        assert await gateway.handler.drain(5)  # woken by the call's end, not a poll
        assert (await call).message == "soon"


async def test_malformed_frame_gets_goaway_and_other_connections_carry_on(gateway):
    bystander = await RawClient.connect(gateway.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    message = grpc_frame(pb.EchoRequest(message="m").SerializeToString())
    try:
        call = bystander.start(grpc_headers(ECHO, extra=metadata(F_IO)), end=False)
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        data_on_stream_0 = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"  # DATA must not use stream 0
        writer.write(preface + data_on_stream_0)
        received = await asyncio.wait_for(reader.read(), 5)  # until the gateway closes
        goaway = None
        while len(received) >= 9:
            length, kind = int.from_bytes(received[:3], "big"), received[3]
            if kind == 7:
                goaway = int.from_bytes(received[9 + 4 : 9 + 8], "big")
            received = received[9 + length :]
        assert goaway == 1  # PROTOCOL_ERROR
        bystander.send(call, message)
        await asyncio.wait_for(call.done, 5)
        assert call.grpc_status == 0
    finally:
        writer.close()
        await bystander.close()


async def test_a_stop_reports_a_grpc_call_as_a_call_not_a_request(instances):
    async with running_gateway(instances) as gw, grpcio_channel(gw.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(message="counted", delay_s=0.6), metadata=metadata(F_IO))
        await asyncio.sleep(0.3)
        assert gw.gw.pending() == (0, 0, 1)
        cut = await gw.gw.stop(grace=5.0)
        assert (await call).message == "counted"
    assert cut.total == 0
