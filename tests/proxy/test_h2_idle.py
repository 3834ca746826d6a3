"""An HTTP/2 connection stays open while streams come and go, and closes
keepalive_timeout after its last stream ended."""

from __future__ import annotations

import asyncio
import time

import pytest

from fngate.proxy.config import GatewayConfig

from .conftest import route
from .h2client import RawH2Client

KEEPALIVE = 0.6


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(
        http_port=0,
        grpc_port=0,
        admin_port=0,
        idle_timeout=10,
        client_header_timeout=2,
        client_body_idle_timeout=2,
        keepalive_timeout=KEEPALIVE,
    )


async def test_idle_close_counts_from_the_last_stream(env, echo_up):
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    client = RawH2Client(reader, writer)
    head = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", env.host().encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in env.headers().items()]
    try:
        # requests spaced under the keep-alive, for longer than it in all
        for sid in (1, 3, 5, 7):
            client.h2.send_headers(sid, head, end_stream=True)
            client.flush()
            assert await client.outcome(sid) == ("response", b"200")
            await asyncio.sleep(KEEPALIVE * 0.6)
        last = time.monotonic() - KEEPALIVE * 0.6
        assert await client.closed()
        assert KEEPALIVE * 0.9 <= time.monotonic() - last <= KEEPALIVE * 3
    finally:
        writer.close()
