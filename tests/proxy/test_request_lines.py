"""Part 4 of issue 13 for HTTP/1.1 clients: a request line or field that an HTTP/1.1
instance request must not carry gets 400 before anything is written upstream. The
parser (llhttp) refuses control octets, bare CR and LF, obs-fold and malformed names
itself; these tests pin that, and the cases it lets through that the driver refuses."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import FID, KEY, route


async def exchange(env, data: bytes) -> bytes:
    """Send bytes on a new connection; everything until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(data)
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            out += chunk
            if b"\r\n\r\nok" in out:  # the instance's answer: this one was forwarded
                break
    finally:
        writer.close()
    return out


def auth(env) -> bytes:
    return b"function-id: %s\r\nAuthorization: Bearer %s\r\n" % (FID.encode(), KEY.encode())


BAD = {
    # what llhttp lets through
    "a fragment in the target": b"GET /x#frag HTTP/1.1\r\nHost: h\r\n",
    "asterisk-form for GET": b"GET * HTTP/1.1\r\nHost: h\r\n",
    "two Host fields": b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",
    "no Host in HTTP/1.1": b"GET /x HTTP/1.1\r\n",
    "Host with a space": b"GET /x HTTP/1.1\r\nHost: a b\r\n",
    "Host with a path": b"GET /x HTTP/1.1\r\nHost: a/b@c\r\n",
    "a transfer coding besides chunked": b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n",
    # what llhttp refuses (pinned: the driver must keep it refused)
    "obs-fold": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n",
    "bare CR in a value": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n",
    "bare LF after a value": b"GET /x HTTP/1.1\r\nHost: h\nX-A: b\r\n",
    "NUL in a value": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n",
    "control octet in a value": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n",
    "DEL in a value": b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n",
    "space in the target": b"GET /a b HTTP/1.1\r\nHost: h\r\n",
    "control octet in the target": b"GET /a\x01 HTTP/1.1\r\nHost: h\r\n",
    "target without a slash": b"GET abc HTTP/1.1\r\nHost: h\r\n",
    "bad field name": b'GET /x HTTP/1.1\r\nHost: h\r\nx(a"@: 1\r\n',
}


@pytest.mark.parametrize("case", BAD)
async def test_bad_request_lines_and_fields_get_400_and_nothing_upstream(env, raw_up, case):
    env.publish([route(raw_up.port)])
    reply = await exchange(env, BAD[case] + auth(env) + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert raw_up.heads == []


async def test_absolute_form_is_sent_in_origin_form_and_routed_by_its_authority(env, raw_up):
    """RFC 9112 3.2.2: the target's authority replaces Host; the instance gets origin-form."""
    env.publish([route(raw_up.port)])
    target = b"http://%s.invocation.example.com/v1/x?a=1" % FID.encode()
    reply = await exchange(env, b"GET %s HTTP/1.1\r\nHost: other.example\r\nAuthorization: Bearer %s\r\n\r\n" % (target, KEY.encode()))
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    [head] = raw_up.heads
    assert head.startswith(b"GET /v1/x?a=1 HTTP/1.1\r\n"), head[:80]
    assert (b"x-forwarded-host", b"%s.invocation.example.com" % FID.encode()) in raw_up.fields(head)


async def test_good_edge_cases_still_pass(env, raw_up):
    env.publish([route(raw_up.port)])
    for line in (
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n",
        b"GET /x HTTP/1.1\r\nHost: [::1]:8000\r\n",
        b"GET /x HTTP/1.1\r\nHost: h.example:80\r\nX-A: caf\xc3\xa9\r\n",  # obs-text is allowed in values
        b"GET /x HTTP/1.0\r\n",  # HTTP/1.0 needs no Host
    ):
        reply = await exchange(env, line + auth(env) + b"\r\n")
        assert reply.startswith(b"HTTP/1.1 200 "), (line, reply[:200])  # the gateway answers as HTTP/1.1
    assert raw_up.heads[0].startswith(b"OPTIONS * HTTP/1.1\r\n")
