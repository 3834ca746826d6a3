"""The HTTP/2 attacks of the hardening issue, sent as raw bytes to a running gateway with
real instances behind it. Each of these failed on the h2-library driver (see the commit
that added them); tests/proxy/test_h2_transcript.py has the same cases without sockets."""

from __future__ import annotations

import asyncio
import gc
import resource
import socket
import time

import hpack
import httpx
import pytest
from aiohttp import web

from fngate.backends.samples import echo

from .conftest import Upstream, route
from .h2frames import (
    CANCEL,
    FRAME_SIZE_ERROR,
    HEADERS,
    PREFACE,
    PROTOCOL_ERROR,
    SETTINGS_ACK,
    goaway_of,
    headers,
    parse,
    ping,
    request_fields,
    resets_of,
    rst_stream,
    settings,
)


class CountingEcho:
    """The echo sample, counting the requests that reached it."""

    def __init__(self) -> None:
        self.requests = 0

        @web.middleware
        async def count(request: web.Request, handler):
            self.requests += 1
            return await handler(request)

        app = echo.make_app()
        app.middlewares.append(count)
        self.upstream = Upstream(app)


@pytest.fixture
async def counting_up():
    up = CountingEcho()
    await up.upstream.start()
    yield up
    await up.upstream.stop()


def auth_fields(env) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer nvapi-test-key")]


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            out += chunk
    except (ConnectionError, TimeoutError):
        pass
    return out


async def others_fine(env) -> None:
    async with httpx.AsyncClient(http1=False, http2=True) as c:
        r = await c.get(f"{env.url}/", headers=env.headers())
    assert r.status_code == 200 and r.http_version == "HTTP/2"


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def test_rapid_reset_never_reaches_an_instance_and_costs_the_connection(env, counting_up):
    env.publish([route(counting_up.upstream.port, max_concurrency=16)])
    fields = request_fields(path=b"/x?delay=5", authority=env.host().encode(), extra=auth_fields(env))
    attack = b"".join(headers(2 * i + 1, fields) + rst_stream(2 * i + 1) for i in range(2000))
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(PREFACE + settings() + SETTINGS_ACK + attack)
    await writer.drain()
    reply = await read_until_closed(reader)
    writer.close()
    assert goaway_of(reply) is not None  # past the reset budget
    await others_fine(env)
    assert counting_up.requests == 1  # only the bystander's request
    assert env.gw.limiter.queued_total() == 0


async def test_an_oversized_frame_length_is_refused_at_its_header(env, echo_up):
    env.publish([route(echo_up.port)])
    before = rss_kib()
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", env.gw.http_port))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, PREFACE + settings() + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01")
        sent = 0
        chunk = b"\x00" * 65536
        try:
            while sent < 16 << 20:
                await asyncio.wait_for(loop.sock_sendall(sock, chunk), 2)
                sent += len(chunk)
        except (ConnectionError, TimeoutError):
            pass
        reply = b""
        try:
            while data := await asyncio.wait_for(loop.sock_recv(sock, 65536), 2):
                reply += data
        except (ConnectionError, TimeoutError):
            pass
        sock.close()
        assert goaway_of(reply) == (0, FRAME_SIZE_ERROR)
        assert sent < 16 << 20  # closed long before the frame could have been buffered
    assert rss_kib() - before < 32 * 1024
    await others_fine(env)


@pytest.mark.parametrize("flood", [ping(), settings()], ids=["ping", "settings"])
async def test_a_control_frame_flood_from_a_client_that_never_reads_is_cut(env, echo_up, flood):
    env.publish([route(echo_up.port)])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it reads nothing
    sock.connect(("127.0.0.1", env.gw.http_port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    before = rss_kib()
    started = time.monotonic()
    cut = False
    try:
        # a request whose body never comes keeps the connection from counting as idle
        fields = request_fields(method=b"POST", authority=env.host().encode(), extra=auth_fields(env))
        await loop.sock_sendall(sock, PREFACE + settings() + SETTINGS_ACK + headers(1, fields, end_stream=False))
        burst = flood * 1000
        while not cut and time.monotonic() - started < 10:
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, burst), 0.5)
            except TimeoutError:
                pass  # the gateway reads no more: wait for it to close the connection
            await others_fine(env)  # the event loop still serves everyone else
    except (ConnectionError, OSError):
        cut = True  # reset by the gateway
    finally:
        sock.close()
    assert cut, "the gateway never closed the flooding connection"
    assert time.monotonic() - started < 3  # by the flood limit, not a timeout
    assert rss_kib() - before < 32 * 1024
    await others_fine(env)


async def test_an_oversized_header_block_gets_431_not_refused_stream(env, echo_up):
    env.publish([route(echo_up.port)])
    fields = request_fields(authority=env.host().encode(), extra=[*auth_fields(env), *((b"x-big-%d" % i, b"a" * 7_000) for i in range(10))])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(PREFACE + settings() + SETTINGS_ACK + headers(1, fields))
    await writer.drain()
    reply = b""
    decoder = hpack.Decoder()
    status = None
    while status is None:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, "closed without an answer"
        reply += chunk
        assert resets_of(reply).get(1) is None
        heads = [p for kind, _, sid, p in parse(reply) if kind == HEADERS and sid == 1]
        if heads:
            status = dict(decoder.decode(heads[0], raw=True))[b":status"]
    writer.close()
    assert status == b"431"


@pytest.mark.parametrize(
    "bad",
    [
        {"method": b"GET /x"},
        {"path": b"/a b"},
        {"path": b"abc"},
        {"extra": [(b"x-a", b"a\x01b")]},
        {"extra": [(b"x-a", b"a\x7fb")]},
        {"extra": [(b'x(a"@', b"v")]},
    ],
)
async def test_bad_request_lines_and_fields_are_reset_never_written_to_the_instance(env, counting_up, bad):
    env.publish([route(counting_up.upstream.port)])
    extra = [*auth_fields(env), *bad.pop("extra", [])]
    fields = request_fields(authority=env.host().encode(), extra=extra, **bad)
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(PREFACE + settings() + SETTINGS_ACK + headers(1, fields))
    await writer.drain()
    reply = b""
    while 1 not in resets_of(reply):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, "closed without a reset"
        reply += chunk
    writer.close()
    assert resets_of(reply)[1] == PROTOCOL_ERROR
    await asyncio.sleep(0.1)
    assert counting_up.requests == 0


def live_h2_connections() -> int:
    return sum(type(o).__name__ == "H2Server" for o in gc.get_objects())


async def test_closed_connections_are_freed_without_the_cyclic_collector(env, echo_up):
    env.publish([route(echo_up.port)])
    gc.collect()
    gc.disable()
    try:
        before = live_h2_connections()
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
            fields = request_fields(authority=env.host().encode(), extra=auth_fields(env))
            # a request waiting for its body, then the oversized frame: GOAWAY, close
            writer.write(
                PREFACE + settings() + SETTINGS_ACK + headers(1, fields, end_stream=False) + b"\x00\x00\x01\x00\x00\x00\x00\x00\x01x"
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01")
            await read_until_closed(reader)
            writer.close()
        await asyncio.sleep(0.3)
        assert live_h2_connections() == before  # freed by reference counting alone
    finally:
        gc.enable()


async def test_a_client_that_never_opens_its_window_does_not_hold_the_slot(env, counting_up):
    """Attack 7 on HTTP/2: streams whose answer waits on a window the client keeps shut
    are reset after client_body_idle_timeout (2 s here), not the 10 s idle timeout."""
    env.publish([route(counting_up.upstream.port, max_concurrency=1)])
    fields = request_fields(path=b"/?size=300000", authority=env.host().encode(), extra=auth_fields(env))
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(PREFACE + settings(initial_window_size=0) + SETTINGS_ACK + headers(1, fields))
    await writer.drain()
    started = time.monotonic()
    try:
        await others_fine(env)  # waits for the only slot
        assert time.monotonic() - started < 6
        reply = b""
        while 1 not in resets_of(reply):
            reply += await asyncio.wait_for(reader.read(65536), 5)
        assert resets_of(reply)[1] == CANCEL
    finally:
        writer.close()
