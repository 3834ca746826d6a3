"""Paths of the one forwarding engine (proxy/calls/call.py) that other tests do not take:
the SSE keep-alive's error events after the gateway's own 200, a request body that
streams faster than the instance reads it (backpressure both ways), a request line an
HTTP/1.1 instance could not take over HTTP/2, and the handler/driver seam itself.
Over HTTP/1.1 and HTTP/2 with real httpx clients, or bytes in and out for the driver."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import orjson
import pytest

from fngate.proxy.wire.headers import valid_host

from .conftest import route
from .h2frames import headers, request_fields, resets_of
from .test_h2_transcript import HELLO, connect, feed, response_heads

PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
KEEPALIVE = 0.1
IDLE = 0.5


def client(http2: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=not http2, http2=http2, timeout=20)


class SlowInstance:
    """An HTTP/1.1 instance on a raw socket. `/late-json` answers JSON after 0.6 s;
    `/trickle` sends a chunk every 0.1 s for 1.5 s; `/vanish` runs `on_vanish` and closes
    the connection without a byte; `/slow-reader` reads its request head, waits 1 s
    before it reads the body (so the gateway's writes to it back up), then answers with
    the body's size."""

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None
        self.bodies: list[int] = []
        self.on_vanish = lambda: None

    async def start(self) -> SlowInstance:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                lower = head.lower()
                if target.startswith(b"/vanish"):
                    self.on_vanish()
                    return
                if target.startswith(b"/trickle"):
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    for i in range(15):
                        writer.write(b"2\r\n%02d\r\n" % i)
                        await writer.drain()
                        await asyncio.sleep(0.1)
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                if target.startswith(b"/late-json"):
                    await asyncio.sleep(0.6)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                    await writer.drain()
                    continue
                await asyncio.sleep(1.0)
                size = 0
                if b"content-length:" in lower:
                    size = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(size)
                elif b"transfer-encoding: chunked" in lower:
                    while True:
                        n = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                        await reader.readexactly(n + 2)
                        if n == 0:
                            break
                        size += n
                self.bodies.append(size)
                answer = b"%d" % size
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def slow():
    up = await SlowInstance().start()
    yield up
    await up.stop()


@pytest.fixture
def gateway_config(gateway_config):
    return replace(gateway_config, sse_queue_keepalive=KEEPALIVE, header_grace=0.2, idle_timeout=IDLE)


async def sse_lines(c: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[int, str, list[str]]:
    async with c.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as r:
        text = b"".join([chunk async for chunk in r.aiter_raw()]).decode()
        return r.status_code, r.headers["content-type"], text.split("\n")


def error_of(lines: list[str]) -> dict[str, object]:
    at = lines.index("event: error")
    data = lines[at + 1]
    assert data.startswith("data: ")
    return orjson.loads(data[6:])


# -- SSE keep-alive: the errors that arrive after the gateway's own 200 ----------------


@PROTOCOLS
async def test_a_gateway_error_after_the_keepalive_head_arrives_as_an_error_event(env, http2):
    env.publish([route(status="ACTIVE")])  # no instance: the request waits (cold start) until its window ends
    async with client(http2) as c:
        status, ctype, lines = await sse_lines(c, f"{env.url}/", env.headers(**{"NVCF-POLL-SECONDS": "1"}))
    assert status == 200 and ctype == "text/event-stream"
    assert lines.count(": keep-alive") >= 2  # comments while it waited
    assert error_of(lines)["status"] == 504  # the poll window ended: no instance took it


@PROTOCOLS
async def test_a_non_sse_answer_after_the_keepalive_head_arrives_as_an_error_event(env, slow, http2):
    env.publish([route(slow.port)])
    async with client(http2) as c:
        status, ctype, lines = await sse_lines(c, f"{env.url}/late-json", env.headers())
        assert status == 200 and ctype == "text/event-stream" and ": keep-alive" in lines
        assert error_of(lines) == {"status": 200, "detail": "the instance answered without an event stream"}
        r = await c.get(f"{env.url}/late-json", headers=env.headers())  # without Accept: the JSON as it is
    assert r.status_code == 200 and r.json() == {}


# -- the idle timeout counts from the last byte; a retry finds the function gone --------


@PROTOCOLS
async def test_a_stream_longer_than_the_idle_timeout_is_not_cut_while_bytes_flow(env, slow, http2):
    env.publish([route(slow.port)])
    async with client(http2) as c:
        r = await c.get(f"{env.url}/trickle", headers=env.headers())
    assert r.status_code == 200 and r.content == b"".join(b"%02d" % i for i in range(15))  # 1.5 s, three idle timeouts


@PROTOCOLS
async def test_a_retry_that_finds_the_function_gone_answers_as_the_snapshot_says(env, slow, http2):
    env.publish([route(slow.port)])
    slow.on_vanish = lambda: env.publish([])  # the function is undeployed while its instance fails
    async with client(http2) as c:
        r = await c.get(f"{env.url}/vanish", headers=env.headers())
    assert r.status_code == 404 and r.headers["nvcf-status"] == "errored"
    assert env.gw.metrics.retries == 1


# -- a request body faster than the instance reads it ----------------------------------


async def _chunks(n: int, size: int):
    for _ in range(n):
        yield b"x" * size


@PROTOCOLS
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_the_instance_reads_slowly_arrives_whole(env, slow, http2, framing):
    env.publish([route(slow.port)])
    total = 8 * 1024 * 1024  # far more than the sockets and the gateway buffer between them
    async with client(http2) as c:
        if framing == "content-length":
            r = await c.post(f"{env.url}/slow-reader", content=b"x" * total, headers=env.headers())
        else:
            r = await c.post(f"{env.url}/slow-reader", content=_chunks(128, total // 128), headers=env.headers())
    assert r.status_code == 200 and r.text == str(total)
    assert slow.bodies == [total]


# -- HTTP/2 request lines an HTTP/1.1 instance could not take ---------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"path": b"/a#fragment"},
        {"path": b"/a\x80b"},
        {"authority": b"fn.example:port"},
        {"authority": b"[::1"},
    ],
    ids=["fragment", "non-ascii", "bad-port", "open-ip-literal"],
)
async def test_an_h2_request_line_http1_would_refuse_gets_400_on_its_stream(fields):
    server, transport, handler = connect()
    transport.take()
    out = feed(server, transport, HELLO + headers(1, request_fields(**fields)) + headers(3, request_fields()))
    await asyncio.sleep(0)
    out += transport.take()
    assert response_heads(out)[1][b":status"] == b"400" and not resets_of(out)
    assert [ex.sid for ex in handler.started] == [3]  # never handed on; the connection goes on


@pytest.mark.parametrize(
    "host,ok",
    [
        (b"", True),
        (b"fn.invocation.example", True),
        (b"fn.example:8080", True),
        (b"[::1]:443", True),
        (b"fn.example:port", False),
        (b"[::1", False),
        (b"a b", False),
        (b"a/b", False),
    ],
)
def test_valid_host_is_one_rule_for_both_drivers(host, ok):
    assert valid_host(host) is ok
