"""Inbound HTTP/2 header checks: nghttp2 (proxy/wire/h2_engine.py) and proxy/drivers/h2_request.py
give RFC 9110/9113's verdict for every octet of names and values and every
pseudo-header rule, fed as raw bytes to the server driver; a malformed stream is
refused alone (RST_STREAM PROTOCOL_ERROR) while its connection carries on."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from h2.errors import ErrorCodes

from fngate.proxy.drivers.h2_request import read_request

from .conftest import route
from .h2client import RawH2Client
from .h2frames import PROTOCOL_ERROR, headers, request_fields, resets_of
from .test_h2_transcript import HELLO, connect, feed

BASE = request_fields()
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def name_ok(name: bytes) -> bool:
    """RFC 9110 5.1 token, lower case (RFC 9113 8.2.1)."""
    return bool(name) and all(c in TCHAR for c in name)


def value_ok(value: bytes) -> bool:
    """RFC 9110 5.5 field-value (VCHAR, obs-text, SP, HTAB), no leading or trailing whitespace."""
    return (
        all(c == 9 or 0x20 <= c <= 0x7E or c >= 0x80 for c in value) and value[:1] not in (b" ", b"\t") and value[-1:] not in (b" ", b"\t")
    )


def gateway_accepts(fields: list[tuple[bytes, bytes]]) -> bool:
    """The server driver's verdict on one request: forwarded, or reset PROTOCOL_ERROR."""
    server, transport, fw = connect()
    out = feed(server, transport, HELLO + headers(1, fields))
    if fw.started:
        return True
    assert resets_of(out) == {1: PROTOCOL_ERROR}, (fields, out)
    return False


async def test_every_octet_of_names_and_values_gets_the_rfc_verdict():
    cases = 0
    for c in range(256):
        o = bytes([c])
        for name, value in [
            (o, b"v"),
            (b"x" + o + b"y", b"v"),
            (b"x-" + o, b"v"),
            (b"x", o),
            (b"x", b"a" + o + b"b"),
            (b"x", o + b"b"),
            (b"x", b"a" + o),
        ]:
            want = name_ok(name) and value_ok(value) and name not in (b"te", b"host", b"connection")
            assert gateway_accepts(BASE + [(name, value)]) == want, (name, value)
            cases += 1
    assert cases == 7 * 256


@pytest.mark.parametrize(
    "extra,ok",
    [
        ([], True),
        ([(b"x", b"")], True),
        ([(b"", b"v")], False),
        ([(b":", b"v")], False),
        ([(b"x-a:b", b"v")], False),
        ([(b"te", b"trailers")], True),
        ([(b"te", b"gzip")], False),
        ([(b"connection", b"close")], False),
        ([(b"keep-alive", b"5")], False),
        ([(b"proxy-connection", b"x")], False),
        ([(b"transfer-encoding", b"chunked")], False),
        ([(b"upgrade", b"h2c")], False),
        ([(b"host", b"fn.example")], True),
        ([(b"host", b"other")], False),
        ([(b"host", b"fn.example"), (b"host", b"fn.example")], False),
        ([(b":path", b"/again")], False),
        ([(b":method", b"GET")], False),
        ([(b":status", b"200")], False),
        ([(b":custom", b"x")], False),
        ([(b":protocol", b"websocket")], False),
        ([(b"cookie", b"a=1"), (b"cookie", b"b=2")], True),
        ([(b"cookie", b"a\r\nb")], False),
    ],
)
async def test_structure_rules(extra, ok):
    assert gateway_accepts(BASE + extra) == ok


@pytest.mark.parametrize(
    "fields",
    [
        [(b"x", b"1"), *BASE],  # a pseudo-header after a regular field
        BASE[1:],  # no :method
        BASE[:1] + BASE[2:],  # no :scheme
        BASE[:2] + BASE[3:],  # no :path
        BASE[:3],  # neither :authority nor host
        BASE[:2] + [(b":path", b"")] + BASE[3:],
    ],
)
async def test_missing_or_misplaced_pseudo_headers_are_refused(fields):
    assert not gateway_accepts(fields)


async def test_a_valid_request_is_split_for_the_driver():
    fields = BASE + [(b"content-type", b"application/grpc+proto"), (b"x-a", b"1")]
    method, path, authority, grpc, regular, size = read_request(fields)
    assert (method, path, authority, grpc) == (b"GET", b"/", b"fn.example", True)
    assert regular == fields[4:]
    assert size == sum(len(n) + len(v) + 32 for n, v in fields)
    assert read_request(BASE[:3] + [(b"host", b"h")])[2] == b"h"
    # cookie fields come out joined and last (RFC 9113 8.2.3)
    cookies = BASE + [(b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2")]
    assert read_request(cookies)[4] == [(b"x-a", b"1"), (b"cookie", b"a=1; b=2")]


async def open_raw_h2(env, method: bytes):
    """(writer, client, request pseudo-headers, authorisation fields) on a new connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    auth = [(k.lower().encode(), v.encode()) for k, v in env.headers().items()]
    head = [(b":method", method), (b":scheme", b"http"), (b":path", b"/"), (b":authority", env.host().encode())]
    return writer, RawH2Client(reader, writer), head, auth


@pytest.mark.parametrize(
    "bad",
    [
        [(b"x-note", b"a\r\nx-injected: 1")],
        [(b"x-note", b"a\x00b")],
        [(b"X-Upper", b"1")],
        [(b"transfer-encoding", b"chunked")],
        [(b":path", b"/twice")],
    ],
)
async def test_a_malformed_request_is_refused_on_its_stream_only(env, echo_up, bad):
    env.publish([route(echo_up.port)])
    writer, client, head, auth = await open_raw_h2(env, b"GET")
    try:
        client.h2.send_headers(1, head + auth + bad, end_stream=True)
        client.flush()
        assert await client.outcome(1) == ("reset", ErrorCodes.PROTOCOL_ERROR)
        client.h2.send_headers(3, head + auth, end_stream=True)
        client.flush()
        assert await client.outcome(3) == ("response", b"200")
    finally:
        writer.close()


async def test_malformed_trailers_end_the_request_with_a_reset(env, echo_up):
    env.publish([route(echo_up.port)])
    writer, client, head, auth = await open_raw_h2(env, b"POST")
    try:
        client.h2.send_headers(1, head + auth)
        client.h2.send_data(1, b"body")
        client.h2.send_headers(1, [(b":path", b"/smuggled")], end_stream=True)
        client.flush()
        assert await client.outcome(1) == ("reset", ErrorCodes.PROTOCOL_ERROR)
        client.h2.send_headers(3, head + auth, end_stream=True)
        client.flush()
        assert await client.outcome(3) == ("response", b"200")
    finally:
        writer.close()


async def test_split_cookie_fields_reach_an_http1_instance_as_one(env, echo_up):
    env.publish([route(echo_up.port)])
    writer, client, head, auth = await open_raw_h2(env, b"GET")
    try:
        client.h2.send_headers(1, head + auth + [(b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2")], end_stream=True)
        client.flush()
        assert await client.outcome(1) == ("response", b"200")
        got = {k.lower(): v for k, v in orjson.loads(client.bodies[1])["headers"].items()}
        assert got["cookie"] == "a=1; b=2" and got["x-a"] == "1"
    finally:
        writer.close()
