"""Attack 6 of issue 13: spoofed forwarding and platform headers. What the instance
receives is read off the wire (a raw-socket instance), so a duplicate a server library
would hide or join is seen."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import KEY, route
from .h2client import RawH2Client

# what an attacker sends next to a valid key
SPOOFED = [
    (b"X-Forwarded-For", b"6.6.6.6"),
    (b"X-Forwarded-Host", b"evil.example"),
    (b"X-Forwarded-Proto", b"https"),
    (b"Forwarded", b"for=6.6.6.6;host=evil.example;proto=https"),
    (b"X_Forwarded_For", b"6.6.6.6"),  # WSGI/CGI read it as HTTP_X_FORWARDED_FOR
    (b"X-Real-IP", b"6.6.6.6"),
    (b"NVCF_SUB", b"victim"),  # ... as HTTP_NVCF_SUB, next to the gateway's NVCF-SUB
    (b"nvcf_function_id", b"victim-function"),
    (b"Nvcf_Ncaid", b"victim-org"),
    (b"NVCF-SUB", b"victim"),
]
SPOOFED_VALUES = (b"6.6.6.6", b"evil.example", b"victim")


def normalised(name: bytes) -> bytes:
    """The name as a WSGI/CGI server sees it (HTTP_X_FORWARDED_FOR)."""
    return name.lower().replace(b"_", b"-")


def assert_only_gateway_values(instance, head: bytes, proto: bytes) -> None:
    fields = instance.fields(head)
    for value in SPOOFED_VALUES:
        assert value not in head, (value, head)
    seen: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        seen.setdefault(normalised(name), []).append(value)
    assert seen[b"x-forwarded-for"] == [b"127.0.0.1"]
    assert seen[b"x-forwarded-proto"] == [proto]
    assert len(seen[b"x-forwarded-host"]) == 1
    assert seen[b"forwarded"] == [b'for=127.0.0.1;host="%s";proto=%s' % (seen[b"x-forwarded-host"][0], proto)]
    assert seen[b"nvcf-sub"] == [b"alice"]  # the key's subject, once
    assert len(seen[b"nvcf-function-id"]) == 1 and len(seen[b"nvcf-ncaid"]) == 1
    assert b"x-real-ip" not in seen


@pytest.mark.parametrize("engine", ["task", "fast"])
async def test_http1_forwarding_headers_are_the_gateways_own(env, raw_up, engine):
    env.publish([route(raw_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    head = b"GET /x HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n" % (env.host().encode(), KEY.encode())
    if engine == "fast":  # a pooled instance connection is idle now: the callback path answers
        writer.write(head + b"\r\n")
        await reader.readuntil(b"ok")
    writer.write(head + b"".join(b"%s: %s\r\n" % f for f in SPOOFED) + b"\r\n")
    await asyncio.wait_for(reader.readuntil(b"ok"), 5)
    writer.close()
    assert_only_gateway_values(raw_up, raw_up.heads[-1], b"http")


async def test_http2_forwarding_headers_are_the_gateways_own(env, raw_up):
    env.publish([route(raw_up.port)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    client = RawH2Client(reader, writer)
    head = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"), (b":authority", env.host().encode())]
    fields = [(b"authorization", b"Bearer " + KEY.encode()), *((n.lower(), v) for n, v in SPOOFED)]
    try:
        for sid in (1, 3):  # the first connects (task), the second finds it pooled (fast path)
            client.h2.send_headers(sid, head + fields, end_stream=True)
            client.flush()
            assert await client.outcome(sid) == ("response", b"200")
            assert_only_gateway_values(raw_up, raw_up.heads[-1], b"http")
    finally:
        writer.close()
