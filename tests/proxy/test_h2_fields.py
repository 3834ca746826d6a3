"""Inbound HTTP/2 header checks (proxy/h2_request.py): the same verdicts as h2's own
validation for every octet and every pseudo-header rule, and a malformed stream is
refused alone (RST_STREAM PROTOCOL_ERROR) while its connection carries on."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, normalize_inbound_headers, validate_headers

from fngate.proxy.h2_request import Malformed, check_trailers, read_request

from .conftest import route
from .h2client import RawH2Client

REQUEST = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
TRAILER = HeaderValidationFlags(is_client=False, is_trailer=True, is_response_header=False, is_push_promise=False)
BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"), (b":authority", b"fn.example")]


def h2_accepts(headers, flags) -> bool:
    """h2's verdict as its server applied it: cookie fields joined, then checked."""
    try:
        list(validate_headers(normalize_inbound_headers(headers, flags), flags))
    except ProtocolError:
        return False
    return True


def we_accept(check, headers) -> bool:
    try:
        check(headers)
    except Malformed:
        return False
    return True


def octet_cases() -> list[list[tuple[bytes, bytes]]]:
    cases = []
    for c in range(256):
        o = bytes([c])
        cases += [
            [(o, b"v")],
            [(b"x" + o + b"y", b"v")],
            [(b"x-" + o, b"v")],
            [(b"x", o)],
            [(b"x", b"a" + o + b"b")],
            [(b"x", o + b"b")],
            [(b"x", b"a" + o)],
        ]
    return cases


STRUCTURE = [
    [],
    [(b"x", b"")],
    [(b"", b"v")],
    [(b":", b"v")],
    [(b"x-a:b", b"v")],
    [(b"te", b"trailers")],
    [(b"te", b"Trailers")],
    [(b"te", b"gzip")],
    [(b"connection", b"close")],
    [(b"keep-alive", b"5")],
    [(b"proxy-connection", b"x")],
    [(b"transfer-encoding", b"chunked")],
    [(b"upgrade", b"h2c")],
    [(b"host", b"fn.example")],
    [(b"host", b"other")],
    [(b"host", b"fn.example"), (b"host", b"fn.example")],
    [(b":path", b"/again")],
    [(b":method", b"GET")],
    [(b":scheme", b"https")],
    [(b":authority", b"fn.example")],
    [(b":status", b"200")],
    [(b":custom", b"x")],
    [(b":protocol", b"websocket")],
    [(b"cookie", b"a=1"), (b"cookie", b"b=2")],
    [(b"cookie", b"a=1 "), (b"cookie", b"b=2")],
    [(b"cookie", b" a=1")],
    [(b"cookie", b"a=1"), (b"cookie", b"b=2\t")],
    [(b"cookie", b"a\r\nb")],
]


def request_cases() -> list[list[tuple[bytes, bytes]]]:
    cases = [BASE + extra for extra in octet_cases() + STRUCTURE]
    cases.append([(b"x", b"1")] + BASE)  # pseudo after regular
    for drop in range(4):
        cases.append(BASE[:drop] + BASE[drop + 1 :])  # each pseudo-header missing
    cases.append([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h")])
    cases.append([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"")] + BASE[3:])
    for extra in (
        [],
        [(b":scheme", b"http")],
        [(b":path", b"/")],
        [(b":protocol", b"websocket")],
        [(b":protocol", b"websocket"), (b":scheme", b"http"), (b":path", b"/")],
    ):
        cases.append([(b":method", b"CONNECT"), (b":authority", b"fn.example:443")] + extra)
    return cases


def test_requests_get_the_verdict_h2_would_give():
    cases = request_cases()
    assert len(cases) > 1800
    accepted = 0
    for headers in cases:
        assert we_accept(read_request, headers) == h2_accepts(headers, REQUEST), headers
        accepted += h2_accepts(headers, REQUEST)
    assert 0 < accepted < len(cases)


def test_trailers_get_the_verdict_h2_would_give():
    for headers in octet_cases() + STRUCTURE + [BASE]:
        assert we_accept(check_trailers, headers) == h2_accepts(headers, TRAILER), headers


def test_verdicts_hold_when_repeated():
    # names and values found valid are remembered; the invalid ones never are
    for _ in range(3):
        assert we_accept(read_request, BASE + [(b"x-ok", b"fine")])
        assert not we_accept(read_request, BASE + [(b"x-ok", b"fine\r\nx-injected: 1")])
        assert not we_accept(read_request, BASE + [(b"X-Upper", b"fine")])


def test_a_valid_request_is_split_for_the_driver():
    headers = BASE + [(b"content-type", b"application/grpc+proto"), (b"x-a", b"1")]
    method, path, authority, grpc, fields, size = read_request(headers)
    assert (method, path, authority, grpc) == (b"GET", b"/x", b"fn.example", True)
    assert fields == headers[4:]
    assert size == sum(len(n) + len(v) + 32 for n, v in headers)
    assert read_request(BASE[:3] + [(b"host", b"h")])[2] == b"h"
    # cookie fields come out joined and last, as h2 normalised them
    cookies = BASE + [(b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2")]
    assert read_request(cookies)[4] == [(b"x-a", b"1"), (b"cookie", b"a=1; b=2")]
    assert read_request(cookies)[4] == list(normalize_inbound_headers(cookies, REQUEST))[4:]


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
