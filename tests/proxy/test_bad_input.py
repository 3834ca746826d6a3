"""Malformed and hostile input: a clear status, the connection closed, and no effect
on other connections."""

from __future__ import annotations

import asyncio
import time

import h2.config
import h2.connection
import h2.events
import httpx
import orjson
import pytest

from tests.support.waiting import wait_for

from .conftest import route


async def raw(env, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection; return everything until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            out += chunk
    finally:
        writer.close()
    return out


async def assert_others_fine(env):
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/", headers=env.headers())
    assert r.status_code == 200


@pytest.mark.parametrize(
    "payload,status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
        # request smuggling: CL and TE together, two CLs, an obfuscated TE
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
)
async def test_malformed_http1_gets_an_error_and_is_closed(env, echo_up, payload, status):
    env.publish([route(echo_up.port)])
    reply = await raw(env, payload)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:100]
    assert b"connection: close" in reply.lower()
    await assert_others_fine(env)


async def test_slowloris_head_is_timed_out(env, echo_up):
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")  # and never finish
    await writer.drain()
    await assert_others_fine(env)  # meanwhile everyone else is served
    reply = await asyncio.wait_for(reader.read(), 5)  # client_header_timeout is 2 s here
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408 ")


async def test_stalled_body_is_timed_out(env, echo_up):
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    host = env.host().encode()
    started = time.monotonic()
    writer.write(b"POST / HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer nvapi-test-key\r\nContent-Length: 100\r\n\r\nabc" % host)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 30)  # read() returns once the gateway closes
    writer.close()
    # the body stalls: after client_body_idle_timeout (2 s here, never sooner) the client is
    # told so and the connection is closed; the instance never answers a partial request
    assert time.monotonic() - started >= 1.9
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b"connection: close" in head.lower() and b"application/problem+json" in head.lower()
    assert orjson.loads(body)["status"] == 408
    async with httpx.AsyncClient() as c:

        async def instance_idle() -> dict | None:
            stats = (await c.get(f"http://127.0.0.1:{echo_up.port}/stats")).json()
            return stats if stats["active"] == 0 else None

        stats = await wait_for(instance_idle, what="the instance done with the stalled request")
    assert stats["finished"] == 0, stats
    await assert_others_fine(env)


async def test_idle_connection_without_request_is_closed(env, echo_up):
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_malformed_http2_gets_goaway(env, echo_up):
    env.publish([route(echo_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    # a DATA frame on stream 0 is a connection error (PROTOCOL_ERROR)
    writer.write(b"\x00\x00\x03\x00\x00\x00\x00\x00\x00abc")
    await writer.drain()
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    writer.close()
    events = conn.receive_data(data)
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    await assert_others_fine(env)


async def test_oversized_http2_headers_get_431_on_that_stream_only(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient(http1=False, http2=True) as c:  # h2c with prior knowledge
        big = await c.get(f"{env.url}/", headers={**env.headers(), "x-big": "a" * 70_000})
        assert big.status_code == 431 and big.http_version == "HTTP/2"
        assert big.headers["content-type"] == "application/problem+json"
        assert big.json()["status"] == 431
        # the same connection (HPACK state and all) still serves requests
        ok = await c.get(f"{env.url}/", headers=env.headers())
        assert ok.status_code == 200 and ok.http_version == "HTTP/2"
    await assert_others_fine(env)
