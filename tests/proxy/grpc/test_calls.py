"""gRPC calls through the gateway relay: grpcio and grpclib clients to grpcio and grpclib instances."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import aiohttp
import grpc
import pytest
from grpclib.client import Channel

from fngate.backends.samples import grpc_echo_pb2 as pb
from tests.proxy.grpc.conftest import running_gateway
from tests.proxy.grpc.gateway import (
    F_BOTH,
    F_IO,
    FUNCTION_OF,
    V_IO,
    V_LIB,
    grpcio_channel,
    grpcio_stub,
    grpclib_stub,
    metadata,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

COMBOS = [(c, s) for c in ("grpcio", "grpclib") for s in ("grpcio", "grpclib")]


def _is_reqid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


async def _four_kinds_grpcio(port: int, md) -> dict:
    async with grpcio_channel(port) as ch:
        stub = grpcio_stub(ch)
        call = stub.Echo(pb.EchoRequest(message="unary"), metadata=md)
        unary = await call
        reqid = dict(await call.initial_metadata())["nvcf-reqid"]
        stream = [r async for r in stub.EchoStream(pb.EchoRequest(message="s", repeat=3), metadata=md)]
        summary = await stub.EchoCollect(iter([pb.EchoRequest(message=m, payload=b"12") for m in "abc"]), metadata=md)
        chat = stub.EchoChat(metadata=md)
        chatted = []
        for word in ("one", "two", "three"):  # each reply arrives before the next request is sent
            await chat.write(pb.EchoRequest(message=word))
            chatted.append((await chat.read()).message)
        await chat.done_writing()
        assert await chat.read() == grpc.aio.EOF
        assert await chat.code() == grpc.StatusCode.OK
    return {"unary": unary, "reqid": reqid, "stream": stream, "summary": summary, "chat": chatted}


async def _four_kinds_grpclib(port: int, md) -> dict:
    channel = Channel("127.0.0.1", port)
    stub = grpclib_stub(channel)
    try:
        async with stub.Echo.open(metadata=md) as st:
            await st.send_message(pb.EchoRequest(message="unary"), end=True)
            unary = await st.recv_message()
            reqid = st.initial_metadata["nvcf-reqid"]
        stream = await stub.EchoStream(pb.EchoRequest(message="s", repeat=3), metadata=md)
        summary = await stub.EchoCollect([pb.EchoRequest(message=m, payload=b"12") for m in "abc"], metadata=md)
        chatted = []
        async with stub.EchoChat.open(metadata=md) as chat:
            for word in ("one", "two", "three"):
                await chat.send_message(pb.EchoRequest(message=word))
                chatted.append((await chat.recv_message()).message)
            await chat.end()
            assert await chat.recv_message() is None
    finally:
        channel.close()
    return {"unary": unary, "reqid": reqid, "stream": stream, "summary": summary, "chat": chatted}


@pytest.mark.parametrize("client,server", COMBOS)
async def test_four_call_kinds(gateway, client, server):
    md = metadata(FUNCTION_OF[server])
    run = _four_kinds_grpcio if client == "grpcio" else _four_kinds_grpclib
    got = await run(gateway.port, md)

    unary = got["unary"]
    assert (unary.message, unary.impl) == ("unary", server)
    assert unary.metadata["function-id"] == FUNCTION_OF[server]
    assert "authorization" not in unary.metadata  # the caller's key stays at the gateway
    assert _is_reqid(unary.metadata["nvcf-reqid"]) and _is_reqid(got["reqid"])
    assert [(r.message, r.index) for r in got["stream"]] == [("s", 0), ("s", 1), ("s", 2)]
    assert (got["summary"].count, got["summary"].total_bytes, list(got["summary"].messages)) == (3, 6, ["a", "b", "c"])
    assert got["chat"] == ["one", "two", "three"]


@pytest.mark.parametrize("client,server", [("grpcio", "grpclib"), ("grpclib", "grpcio")])
async def test_large_messages_both_ways(gateway, client, server):
    size = 24 * 1024 * 1024
    md = metadata(FUNCTION_OF[server])
    if client == "grpcio":
        async with grpcio_channel(gateway.port) as ch:
            up = await grpcio_stub(ch).Echo(pb.EchoRequest(message="up", payload=b"u" * size), metadata=md)
            down = [r async for r in grpcio_stub(ch).EchoStream(pb.EchoRequest(repeat=2, response_size=size), metadata=md)]
    else:
        channel = Channel("127.0.0.1", gateway.port)
        try:
            up = await grpclib_stub(channel).Echo(pb.EchoRequest(message="up", payload=b"u" * size), metadata=md)
            down = await grpclib_stub(channel).EchoStream(pb.EchoRequest(repeat=2, response_size=size), metadata=md)
        finally:
            channel.close()
    assert up.payload == b"u" * size
    assert [len(r.payload) for r in down] == [size, size]


@pytest.mark.parametrize("client", ["grpcio", "grpclib"])
async def test_many_concurrent_streams_on_one_connection(gateway, instances, client):
    n = 300
    md = metadata(F_BOTH, V_LIB)
    requests = [pb.EchoRequest(message=str(i), delay_s=0.05) for i in range(n)]
    if client == "grpcio":
        async with grpcio_channel(gateway.port) as ch:
            stub = grpcio_stub(ch)
            replies = await asyncio.gather(*(stub.Echo(r, metadata=md) for r in requests))
    else:
        channel = Channel("127.0.0.1", gateway.port)
        try:
            stub = grpclib_stub(channel)
            replies = await asyncio.gather(*(stub.Echo(r, metadata=md) for r in requests))
        finally:
            channel.close()
    assert sorted(int(r.message) for r in replies) == list(range(n))
    # the relay multiplexes onto few upstream connections (a new one only past the peer's stream limit)
    upstream = gateway.handler.pool.connections("127.0.0.1", instances["grpclib"].port)
    assert 1 <= len(upstream) <= 3


@pytest.mark.grpc_per_call  # calls of one channel spread: a session keeps them on one version
async def test_version_pinning_and_spreading_by_metadata(gateway):
    async with grpcio_channel(gateway.port) as ch:
        stub = grpcio_stub(ch)
        pinned_io = await stub.Echo(pb.EchoRequest(), metadata=metadata(F_BOTH, V_IO))
        pinned_lib = await stub.Echo(pb.EchoRequest(), metadata=metadata(F_BOTH, V_LIB))
        spread = Counter([(await stub.Echo(pb.EchoRequest(), metadata=metadata(F_BOTH))).impl for _ in range(40)])
    assert (pinned_io.impl, pinned_lib.impl) == ("grpcio", "grpclib")
    assert set(spread) == {"grpcio", "grpclib"}  # without a version, any invokable version serves


async def test_routing_by_authority(gateway):
    # {version}.{function}.<domain> pins a version, as for HTTP host routing
    authority = f"{V_LIB}.{F_BOTH}.invocation.local"
    async with grpcio_channel(gateway.port, ("grpc.default_authority", authority)) as ch:
        reply = await grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=[("authorization", "Bearer good-key")])
    assert reply.impl == "grpclib"
    async with grpcio_channel(gateway.port, ("grpc.default_authority", f"{F_IO}.invocation.local")) as ch:
        reply = await grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=[("authorization", "Bearer good-key")])
    assert reply.impl == "grpcio"


async def test_metrics_count_calls_by_function_and_status(gateway):
    async with grpcio_channel(gateway.port) as ch:
        await grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=metadata(F_IO))
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gateway.gw.admin_port}/metrics") as resp:
        text = await resp.text()
    assert f'fngate_grpc_calls_total{{function_id="{F_IO}",grpc_status="OK"}}' in text
    assert f'fngate_grpc_active_streams{{function_id="{F_IO}"}} 0' in text
    assert f'fngate_grpc_call_duration_seconds_count{{function_id="{F_IO}"}}' in text


@pytest.mark.parametrize("client", ["grpcio", "grpclib"])
async def test_grpc_on_the_invocation_port(gateway, client):
    """The HTTP invocation port takes gRPC too (HTTP/2 prior knowledge, application/grpc)."""
    port = gateway.gw.http_port
    if client == "grpcio":
        async with grpcio_channel(port) as ch:
            reply = await grpcio_stub(ch).Echo(pb.EchoRequest(message="via http port"), metadata=metadata(F_IO))
    else:
        channel = Channel("127.0.0.1", port)
        try:
            reply = await grpclib_stub(channel).Echo(pb.EchoRequest(message="via http port"), metadata=metadata(F_IO))
        finally:
            channel.close()
    assert (reply.message, reply.impl) == ("via http port", "grpcio")


async def test_grpc_over_tls_with_alpn(instances, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = await asyncio.create_subprocess_exec(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=gateway.test",
        "-addext",
        "subjectAltName=DNS:gateway.test",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await openssl.wait() == 0
    async with running_gateway(instances, tls_cert=str(cert), tls_key=str(key)) as gw:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        options = [("grpc.ssl_target_name_override", "gateway.test")]
        async with grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", credentials, options=options) as ch:
            reply = await grpcio_stub(ch).Echo(pb.EchoRequest(message="over tls"), metadata=metadata(F_IO))
    assert (reply.message, reply.impl) == ("over tls", "grpcio")


async def test_authority_matches_case_insensitively(gateway):
    """Attack 10 of issue 13, for gRPC: the host name in :authority is case-insensitive."""
    authority = f"{V_LIB}.{F_BOTH}.Invocation.Local"
    async with grpcio_channel(gateway.port, ("grpc.default_authority", authority)) as ch:
        reply = await grpcio_stub(ch).Echo(pb.EchoRequest(), metadata=[("authorization", "Bearer good-key")])
    assert reply.impl == "grpclib"
