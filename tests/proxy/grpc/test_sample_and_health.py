"""The sample gRPC function and the gRPC health probe, as separate processes on loopback."""

from __future__ import annotations

import socket

import grpc
from grpclib.client import Channel

from fngate.backends.grpc_health import check_grpc_health, probe_grpc_health
from fngate.backends.samples import grpc_echo_pb2 as pb
from fngate.backends.samples import grpc_echo_pb2_grpc as pb_grpc
from fngate.backends.samples.grpc_echo_grpc import EchoStub
from tests.proxy.grpc.conftest import start_echo
from tests.support.net import free_port


async def test_sample_serves_all_call_kinds_and_health(echo_instance):
    port = echo_instance.port
    assert await check_grpc_health("127.0.0.1", port)
    assert await check_grpc_health("127.0.0.1", port, "fngate.echo.v1.Echo")
    healthy, detail = await probe_grpc_health("127.0.0.1", port, "no.such.Service")
    assert not healthy and "NOT_FOUND" in detail

    channel = Channel("127.0.0.1", port)
    stub = EchoStub(channel)
    try:
        reply = await stub.Echo(pb.EchoRequest(message="hi"), metadata={"x-tag": "t1"})
        assert (reply.message, reply.impl, reply.metadata["x-tag"]) == ("hi", echo_instance.impl, "t1")
        assert [r.index for r in await stub.EchoStream(pb.EchoRequest(repeat=3, response_size=10))] == [0, 1, 2]
        async with stub.EchoChat.open() as chat:
            await chat.send_message(pb.EchoRequest(message="a", repeat=2))
            assert [(await chat.recv_message()).index for _ in range(2)] == [0, 1]
            await chat.send_message(pb.EchoRequest(message="b"), end=True)
            assert [m.message async for m in chat] == ["b"]
    finally:
        channel.close()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.EchoStub(ch)
        summary = await stub.EchoCollect(iter([pb.EchoRequest(message="1", payload=b"ab"), pb.EchoRequest(message="2")]))
        assert (summary.count, summary.total_bytes, list(summary.messages)) == (2, 2, ["1", "2"])
        call = stub.EchoStream(pb.EchoRequest(repeat=5, error=pb.ErrorSpec(code=8, message="m", trailers={"x-why": "full"}, after=2)))
        got = []
        try:
            async for r in call:
                got.append(r.index)
        except grpc.aio.AioRpcError as e:
            assert (e.code(), e.details(), dict(e.trailing_metadata())["x-why"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "m", "full")
        else:
            raise AssertionError("the call should have failed")
        assert got == [0, 1]
        stats = await stub.Stats(pb.StatsRequest())
        assert stats.started >= 5 and stats.active == 0 and stats.cancelled == 0


async def test_health_reports_not_serving_then_serving():
    instance = await start_echo("grpclib", "--not-serving-for", "30")
    try:
        healthy, detail = await probe_grpc_health("127.0.0.1", instance.port)
        assert (healthy, detail) == (False, "NOT_SERVING")
    finally:
        await instance.stop()


async def test_health_check_of_a_closed_port_is_false_and_quick():
    healthy, detail = await probe_grpc_health("127.0.0.1", free_port(), timeout=1.0)
    assert not healthy and "failed" in detail


async def test_health_check_times_out_on_a_silent_peer():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks HTTP/2
        healthy, detail = await probe_grpc_health("127.0.0.1", silent.getsockname()[1], timeout=0.3)
    assert not healthy and "timed out" in detail
