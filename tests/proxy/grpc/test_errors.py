"""Errors through the gateway: the gateway's own (trailers-only, with the right grpc-status)
and the instance's (status and custom trailers passed through unchanged)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from fngate.backends.samples import grpc_echo_pb2 as pb
from tests.proxy.grpc.gateway import (
    EXPIRED_KEY,
    F_DEPLOYING,
    F_DOWN,
    F_HTTP,
    F_INACTIVE,
    F_IO,
    F_LIB,
    F_ONE,
    FUNCTION_OF,
    KEY,
    NO_INVOKE_KEY,
    SCOPED_KEY,
    V_OTHER,
    grpcio_channel,
    grpcio_stub,
    grpclib_stub,
    metadata,
)
from tests.proxy.grpc.rawh2 import RawClient, grpc_frame, grpc_headers

pytestmark = pytest.mark.asyncio(loop_scope="module")
S = grpc.StatusCode


async def grpcio_status(port, md, request=None, timeout=None):
    """(status name, details, trailing metadata) of one unary call with grpcio."""
    async with grpcio_channel(port) as ch:
        call = grpcio_stub(ch).Echo(request or pb.EchoRequest(), metadata=md, timeout=timeout)
        try:
            await call
        except grpc.aio.AioRpcError:
            pass
        return (await call.code()).name, await call.details(), dict(await call.trailing_metadata() or ())


async def grpclib_status(port, md, request=None, timeout=None):
    channel = Channel("127.0.0.1", port)
    try:
        async with grpclib_stub(channel).Echo.open(metadata=md, timeout=timeout) as st:
            await st.send_message(request or pb.EchoRequest(), end=True)
            try:
                await st.recv_message()
                await st.recv_trailing_metadata()
            except GRPCError as e:
                return e.status.name, e.message, dict(st.trailing_metadata or ())
            return "OK", None, dict(st.trailing_metadata or ())
    except TimeoutError:  # grpclib's own deadline fired first
        return "DEADLINE_EXCEEDED", "client deadline", {}
    finally:
        channel.close()


STATUS_OF = {"grpcio": grpcio_status, "grpclib": grpclib_status}

GATEWAY_ERRORS = [
    ("unknown function", metadata(str(uuid.uuid4())), "NOT_FOUND"),
    ("unknown version", metadata(F_IO, str(uuid.uuid4())), "NOT_FOUND"),
    ("version of another function", metadata(F_IO, V_OTHER), "NOT_FOUND"),
    ("deploying", metadata(F_DEPLOYING), "UNAVAILABLE"),
    ("deploying, version pinned", metadata(F_DEPLOYING, V_OTHER), "UNAVAILABLE"),
    ("inactive, version pinned", metadata(F_INACTIVE, V_OTHER), "FAILED_PRECONDITION"),
    ("inactive", metadata(F_INACTIVE), "FAILED_PRECONDITION"),
    ("not a gRPC function", metadata(F_HTTP), "FAILED_PRECONDITION"),
    ("missing key", metadata(F_IO, key=None), "UNAUTHENTICATED"),
    ("unknown key", metadata(F_IO, key="wrong"), "UNAUTHENTICATED"),
    ("expired key", metadata(F_IO, key=EXPIRED_KEY), "UNAUTHENTICATED"),
    ("key without invoke_function", metadata(F_IO, key=NO_INVOKE_KEY), "PERMISSION_DENIED"),
    ("key for another function", metadata(F_LIB, key=SCOPED_KEY), "PERMISSION_DENIED"),
    ("no function-id", [("authorization", f"Bearer {KEY}")], "INVALID_ARGUMENT"),
    ("instance unreachable", metadata(F_DOWN), "UNAVAILABLE"),
]


@pytest.mark.parametrize("client", ["grpcio", "grpclib"])
@pytest.mark.parametrize("case,md,expected", GATEWAY_ERRORS, ids=[c[0] for c in GATEWAY_ERRORS])
async def test_gateway_errors_are_trailers_only_statuses(gateway, client, case, md, expected):
    status, message, trailers = await STATUS_OF[client](gateway.port, md)
    assert status == expected, (case, message)
    assert message  # a reason a user can act on
    assert str(uuid.UUID(trailers["nvcf-reqid"])) == trailers["nvcf-reqid"]


async def test_scoped_key_may_invoke_its_function(gateway):
    assert (await grpcio_status(gateway.port, metadata(F_IO, key=SCOPED_KEY)))[0] == "OK"


async def _hold_slot(port, seconds):
    """A call that keeps F_ONE's only slot busy."""
    async with grpcio_channel(port) as ch:
        return await grpcio_stub(ch).Echo(pb.EchoRequest(delay_s=seconds), metadata=metadata(F_ONE))


@pytest.mark.grpc_per_call  # each call takes a slot (in a session the calls share one)
async def test_queue_full_is_resource_exhausted_and_queued_calls_proceed(gateway):
    busy = asyncio.create_task(_hold_slot(gateway.port, 1.0))
    await asyncio.sleep(0.3)
    queued = asyncio.create_task(grpcio_status(gateway.port, metadata(F_ONE)))  # takes the one queue place
    await asyncio.sleep(0.2)
    status, message, _ = await grpclib_status(gateway.port, metadata(F_ONE))
    assert status == "RESOURCE_EXHAUSTED", message
    await busy
    assert (await queued)[0] == "OK"


@pytest.mark.grpc_per_call  # each call takes a slot (in a session the calls share one)
async def test_poll_window_passed_while_queued_is_deadline_exceeded(gateway):
    gateway.handler.queue_timeout = 0.3
    try:
        busy = asyncio.create_task(_hold_slot(gateway.port, 1.0))
        await asyncio.sleep(0.2)
        status, message, _ = await grpcio_status(gateway.port, metadata(F_ONE))
        assert status == "DEADLINE_EXCEEDED" and "poll window" in message
        await busy
    finally:
        gateway.handler.queue_timeout = 60.0


@pytest.mark.grpc_per_call  # each call takes a slot (in a session the calls share one)
@pytest.mark.parametrize("client", ["grpcio", "grpclib"])
async def test_grpc_timeout_while_queued_is_deadline_exceeded(gateway, client):
    busy = asyncio.create_task(_hold_slot(gateway.port, 1.0))
    await asyncio.sleep(0.2)
    status, _, _ = await STATUS_OF[client](gateway.port, metadata(F_ONE), timeout=0.3)
    assert status == "DEADLINE_EXCEEDED"
    await busy
    assert (await grpcio_status(gateway.port, metadata(F_ONE)))[0] == "OK"  # the slot was released


@pytest.mark.parametrize("client", ["grpcio", "grpclib"])
@pytest.mark.parametrize("server", ["grpcio", "grpclib"])
async def test_instance_error_status_and_custom_trailers_pass_through(gateway, client, server):
    error = pb.ErrorSpec(code=9, message="model not loaded: retry later ✓", trailers={"x-retry-after": "5", "x-model": "m1"})
    status, message, trailers = await STATUS_OF[client](gateway.port, metadata(FUNCTION_OF[server]), pb.EchoRequest(error=error))
    assert (status, message) == ("FAILED_PRECONDITION", "model not loaded: retry later ✓")
    assert (trailers["x-retry-after"], trailers["x-model"]) == ("5", "m1")


@pytest.mark.parametrize("server", ["grpcio", "grpclib"])
async def test_instance_error_after_streamed_replies(gateway, server):
    request = pb.EchoRequest(repeat=5, error=pb.ErrorSpec(code=14, message="gpu fell off", trailers={"x-why": "xid 79"}, after=2))
    async with grpcio_channel(gateway.port) as ch:
        call = grpcio_stub(ch).EchoStream(request, metadata=metadata(FUNCTION_OF[server]))
        got = []
        with pytest.raises(grpc.aio.AioRpcError):
            async for reply in call:
                got.append(reply.index)
        assert got == [0, 1]
        assert (await call.code(), await call.details()) == (S.UNAVAILABLE, "gpu fell off")
        assert dict(await call.trailing_metadata())["x-why"] == "xid 79"


async def test_gateway_enforces_grpc_timeout_itself(gateway):
    busy = asyncio.create_task(_hold_slot(gateway.port, 1.0))
    await asyncio.sleep(0.2)
    client = await RawClient.connect(gateway.port)  # a client that would wait forever
    try:
        headers = grpc_headers("/fngate.echo.v1.Echo/Echo", extra=[*metadata(F_ONE), ("grpc-timeout", "300m")])
        result = client.start(headers, grpc_frame(pb.EchoRequest().SerializeToString()))
        await asyncio.wait_for(result.done, 5)
        assert result.grpc_status == 4 and result.headers["grpc-message"] == "deadline exceeded"
    finally:
        await client.close()
    await busy


async def test_invalid_grpc_timeout_is_invalid_argument(gateway):
    client = await RawClient.connect(gateway.port)
    try:
        headers = grpc_headers("/fngate.echo.v1.Echo/Echo", extra=[*metadata(F_IO), ("grpc-timeout", "soon")])
        result = client.start(headers, grpc_frame(pb.EchoRequest().SerializeToString()))
        await asyncio.wait_for(result.done, 5)
        assert result.grpc_status == 3 and "grpc-timeout" in result.headers["grpc-message"]
    finally:
        await client.close()
