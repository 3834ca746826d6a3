"""Attack 5 of issue 13: a pipelined HTTP/1.1 request whose head straddles the answer
to the previous one. The head must reach the instance intact, and an unfinished head
falls under the header timeout, not the keep-alive one."""

from __future__ import annotations

import asyncio
import time

import pytest

from fngate.proxy.config import GatewayConfig

from .conftest import FID, KEY, route


@pytest.fixture
def gateway_config() -> GatewayConfig:
    # keep-alive far longer than the header timeout, so the two cannot be confused
    return GatewayConfig(http_port=0, grpc_port=0, admin_port=0, client_header_timeout=3, keepalive_timeout=30)


def first(env) -> bytes:
    return b"GET /first?delay=1 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n" % (env.host().encode(), KEY.encode())


# the next head, cut after its first field line (the bytes of the issue)
SECOND_START = b"GET /second HTTP/1.1\r\nHost: x\r\n"


async def read_response(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = next(int(v) for n, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if n.lower() == b"content-length")
    return head + await reader.readexactly(length)


async def test_head_straddling_the_previous_response_reaches_the_instance_intact(env, raw_up):
    env.publish([route(raw_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(first(env) + SECOND_START)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")  # /first, after 1 s
    await asyncio.sleep(2)
    writer.write(b"function-id: %s\r\nAuthorization: Bearer %s\r\nX-Tail: 1\r\n\r\n" % (FID.encode(), KEY.encode()))
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
    writer.close()
    second = raw_up.heads[-1]
    assert second.startswith(b"GET /second HTTP/1.1\r\n"), second[:60]  # was b"GET  HTTP/1.1"
    fields = raw_up.fields(second)
    assert (b"x-forwarded-host", b"x") in fields  # the Host line sent before the first answer
    assert (b"x-tail", b"1") in fields


async def test_unfinished_pipelined_head_gets_the_header_timeout(env, raw_up):
    env.publish([route(raw_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(first(env) + SECOND_START)  # and the second head never ends
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
    answered = time.monotonic()
    reply = await asyncio.wait_for(reader.read(), 20)
    waited = time.monotonic() - answered
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:60]
    assert waited < 15  # the 3 s header timeout, not the 30 s keep-alive one
    assert len(raw_up.heads) == 1  # nothing of the unfinished head went upstream
