"""The HTTP/2 server driver (proxy/drivers/h2.py) without sockets: hand-written bytes in, bytes
and handler calls out. Each attack from the hardening issue is replayed here byte for
byte; tests/proxy/test_h2_attacks.py replays them against a running gateway."""

from __future__ import annotations

import asyncio
import gc
import weakref

import hpack
import pytest

from fngate.proxy.calls.exchange import OpenConnections
from fngate.proxy.config import GatewayConfig
from fngate.proxy.drivers.h2 import H2Server
from fngate.proxy.wire.h2_engine import MAX_CONTINUATIONS, MAX_HEADER_COUNT, RESET_BURST

from .h2frames import (
    CONTINUATION,
    DATA,
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    HEADERS,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    SETTINGS_ACK,
    frame,
    goaway_of,
    headers,
    parse,
    ping,
    request_fields,
    resets_of,
    rst_stream,
    settings,
)

HELLO = PREFACE + settings() + SETTINGS_ACK


class Transport:
    """What the driver sees of a socket: the bytes it wrote, whether it closed it."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data


class Handler:
    """Records the exchanges the driver hands over; answers none of them by itself."""

    def __init__(self) -> None:
        self.started: list = []

    def start(self, ex) -> None:
        self.started.append(ex)


def connect(**config) -> tuple[H2Server, Transport, Handler]:
    fw = Handler()
    server = H2Server(GatewayConfig(**config), fw, OpenConnections())
    transport = Transport()
    server.connection_made(transport)  # type: ignore[arg-type]
    return server, transport, fw


def feed(server: H2Server, transport: Transport, data: bytes) -> bytes:
    server.data_received(data)
    return transport.take()


async def settle(server: H2Server, transport: Transport) -> bytes:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return transport.take()


def response_heads(data: bytes) -> dict[int, dict[bytes, bytes]]:
    decoder = hpack.Decoder()
    return {sid: dict(decoder.decode(p, raw=True)) for kind, _, sid, p in parse(data) if kind == HEADERS}


async def test_a_request_becomes_one_exchange_and_its_answer_one_write():
    server, transport, fw = connect()
    transport.take()
    feed(server, transport, HELLO + headers(1, request_fields(path=b"/v1/x?a=1", extra=[(b"x-a", b"1")])))
    (ex,) = fw.started
    assert (ex.method, ex.target, ex.authority, ex.headers) == ("GET", b"/v1/x?a=1", b"fn.example", [(b"x-a", b"1")])
    ex.start_response(200, [(b"content-length", b"2")])
    ex.send(b"ok")
    ex.end()
    out = await settle(server, transport)
    assert response_heads(out)[1][b":status"] == b"200"
    assert [(k, f & 1, p) for k, f, sid, p in parse(out) if k == DATA] == [(DATA, 1, b"ok")]


async def test_a_stream_reset_in_the_batch_that_opened_it_never_reaches_the_handler():
    server, transport, fw = connect()
    burst = b"".join(headers(2 * i + 1, request_fields(path=b"/x?delay=5")) + rst_stream(2 * i + 1) for i in range(100))
    feed(server, transport, HELLO + burst + headers(201, request_fields(path=b"/kept")))
    assert [ex.target for ex in fw.started] == [b"/kept"]
    assert set(server.streams) == {201}


async def test_a_connection_past_its_reset_budget_gets_goaway():
    server, transport, fw = connect()
    burst = b"".join(headers(2 * i + 1, request_fields()) + rst_stream(2 * i + 1) for i in range(RESET_BURST + 100))
    out = feed(server, transport, HELLO + burst)
    assert goaway_of(out) is not None and transport.closed
    assert fw.started == []


async def test_frame_length_is_checked_at_the_frame_header():
    server, transport, _fw = connect()
    out = feed(server, transport, HELLO + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01")
    assert goaway_of(out)[1] == FRAME_SIZE_ERROR and transport.closed
    assert feed(server, transport, b"\x00" * (1 << 20)) == b""  # the rest is never looked at


@pytest.mark.parametrize(
    "fields",
    [
        request_fields(method=b"GET /x"),
        request_fields(path=b"/a b"),
        request_fields(path=b"abc"),
        request_fields(extra=[(b"x-a", b"a\x01b")]),
        request_fields(extra=[(b"x-a", b"a\x7fb")]),
        request_fields(extra=[(b'x(a"@', b"v")]),
        request_fields(extra=[(b"x-a", b"a\r\nx-injected: 1")]),
        request_fields(extra=[(b"X-Upper", b"1")]),
        request_fields(extra=[(b"transfer-encoding", b"chunked")]),
        request_fields(extra=[(b"host", b"other.example")]),
        request_fields()[:2] + request_fields()[3:],  # no :path
    ],
)
async def test_a_malformed_request_is_reset_and_never_forwarded(fields):
    server, transport, fw = connect()
    out = feed(server, transport, HELLO + headers(1, fields) + headers(3, request_fields()))
    out += await settle(server, transport)
    assert resets_of(out) == {1: PROTOCOL_ERROR}
    assert [ex.sid for ex in fw.started] == [3]  # the connection goes on


async def test_an_oversized_header_block_gets_431_on_its_stream():
    server, transport, fw = connect(max_header_bytes=16 * 1024)
    big = request_fields(extra=[(b"x-big", b"a" * 20_000)])
    out = feed(server, transport, HELLO + headers(1, big) + headers(3, request_fields()))
    out += await settle(server, transport)
    assert response_heads(out)[1][b":status"] == b"431"
    assert 1 not in resets_of(out)  # not REFUSED_STREAM: clients would retry it
    assert [ex.sid for ex in fw.started] == [3]


async def test_an_oversized_header_block_with_a_body_still_gets_its_answer_before_the_reset():
    server, transport, _fw = connect(max_header_bytes=16 * 1024)
    out = feed(server, transport, HELLO + headers(1, request_fields(extra=[(b"x-big", b"a" * 20_000)]), end_stream=False))
    out += await settle(server, transport)
    out += await settle(server, transport)
    kinds = [k for k, _, sid, _ in parse(out) if sid == 1]
    assert response_heads(out)[1][b":status"] == b"431"
    assert resets_of(out) == {1: NO_ERROR} and kinds.index(HEADERS) < kinds.index(3)


async def test_a_header_block_past_the_hard_cap_ends_the_connection():
    server, transport, _fw = connect(max_header_bytes=4096)
    out = feed(server, transport, HELLO + headers(1, request_fields(extra=[(b"x-big", b"a" * 40_000)])))
    assert goaway_of(out)[1] == ENHANCE_YOUR_CALM and transport.closed


async def test_too_many_header_fields_end_the_connection():
    server, transport, _fw = connect()
    many = request_fields(extra=[(b"x-%d" % i, b"v") for i in range(MAX_HEADER_COUNT + 1)])
    out = feed(server, transport, HELLO + headers(1, many))
    assert goaway_of(out)[1] == ENHANCE_YOUR_CALM and transport.closed


async def test_a_continuation_flood_ends_the_connection():
    server, transport, _fw = connect()
    flood = frame(HEADERS, 0, 1, b"") + frame(CONTINUATION, 0, 1, b"") * (MAX_CONTINUATIONS + 10)
    out = feed(server, transport, HELLO + flood)
    assert goaway_of(out)[1] == ENHANCE_YOUR_CALM and transport.closed


async def test_glitches_past_the_budget_get_goaway():
    server, transport, _fw = connect()
    flood = headers(1, request_fields(), end_stream=False) + frame(DATA, 0, 1, b"") * 20_000  # empty DATA does nothing
    out = feed(server, transport, HELLO + flood)
    assert goaway_of(out)[1] == ENHANCE_YOUR_CALM and transport.closed


@pytest.mark.parametrize("flood", [ping(), settings()], ids=["ping", "settings"])
async def test_a_control_frame_flood_from_a_client_that_never_reads_is_bounded(flood):
    server, transport, _fw = connect()
    feed(server, transport, HELLO)
    server.pause_writing()  # the client reads nothing: its socket buffer is full
    out = b""
    for _ in range(100):
        out += feed(server, transport, flood * 100)
        if transport.closed:
            break
    assert goaway_of(out)[1] == ENHANCE_YOUR_CALM and transport.closed
    assert len(out) < 100  # only the GOAWAY: no acknowledgement piled up in the gateway


async def test_a_closed_connection_is_freed_by_reference_counting_alone():
    gc.disable()
    try:
        server, transport, fw = connect()
        feed(server, transport, HELLO + headers(1, request_fields(), end_stream=False) + frame(DATA, 0, 1, b"x" * 1000))
        feed(server, transport, headers(3, request_fields()))
        await asyncio.sleep(0)  # the body's task ran (the fake handler returns at once)
        gone = weakref.ref(server)
        exchanges = [weakref.ref(ex) for ex in fw.started]
        fw.started.clear()  # (the real handler keeps no exchange)
        server.connection_lost(None)
        del server, fw
        assert gone() is None
        assert all(ref() is None for ref in exchanges)
    finally:
        gc.enable()
