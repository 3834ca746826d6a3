"""Requests a driver refuses before any handler sees them (a head it cannot parse, headers
over the limit) are answered by the same error root as every other gateway error
(proxy/errors.error_fields, proxy/grpc/protocol.error_headers): problem+json with the
request id and NVCF's status header on HTTP/1.1 and HTTP/2, a trailers-only gRPC status
with the request id on a gRPC stream. The security behaviour stays: the HTTP/1.1
connection closes, the HTTP/2 connection's other streams go on."""

from __future__ import annotations

import asyncio
import json
import re

import hpack
import httpx

from .conftest import route
from .h2frames import DATA, HEADERS, PREFACE, SETTINGS_ACK, headers, parse, request_fields, resets_of, settings

REQUEST_ID = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
AUTH = (b"authorization", b"Bearer nvapi-test-key")


async def h1_answer(port: int, request: bytes) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    """(status, header fields, body, the gateway closed the connection) of a raw request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            raw += chunk
        closed = True
    except TimeoutError:
        closed = False
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body, closed


def assert_problem(status: int, fields: dict[bytes, bytes], body: bytes) -> None:
    assert REQUEST_ID.match(fields[b"nvcf-reqid"]), fields
    assert fields[b"nvcf-status"] == b"errored"
    assert fields[b"content-type"] == b"application/problem+json"
    assert int(fields[b"content-length"]) == len(body)
    assert json.loads(body)["status"] == status


async def test_http1_parse_errors_are_problems_with_a_request_id(env):
    port = env.gw.http_port
    status, fields, body, closed = await h1_answer(port, b"GET /x HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n")
    assert status == 400 and closed
    assert_problem(400, fields, body)
    big = b"".join(b"x-big-%d: %s\r\n" % (i, b"a" * 7_000) for i in range(12))
    status, fields, body, closed = await h1_answer(port, b"GET /x HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")
    assert status == 431 and closed
    assert_problem(431, fields, body)


async def h2_refusal(env, extra: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], bytes, dict[int, int]]:
    """Stream 1 with headers over the limit: (its head fields, its body, the resets seen)."""
    fields = request_fields(authority=env.host().encode(), extra=[AUTH, *extra, *((b"x-big-%d" % i, b"a" * 7_000) for i in range(10))])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(PREFACE + settings() + SETTINGS_ACK + headers(1, fields))
    await writer.drain()
    reply, head, body, ended = b"", None, b"", False
    decoder = hpack.Decoder()
    while not ended:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, "closed without an answer"
        reply += chunk
        head, body = None, b""
        decoder = hpack.Decoder()
        for kind, flags, sid, payload in parse(reply):
            if sid != 1:
                continue
            if kind == HEADERS:
                head = dict(decoder.decode(payload, raw=True))
            elif kind == DATA:
                body += payload
            ended = ended or bool(flags & 0x1)
    writer.close()
    assert head is not None
    return head, body, resets_of(reply)


async def test_an_oversized_http2_header_block_is_a_problem_with_a_request_id(env, echo_up):
    env.publish([route(echo_up.port)])
    head, body, resets = await h2_refusal(env, [])
    assert head[b":status"] == b"431" and resets.get(1) is None  # an answer, not REFUSED_STREAM
    assert_problem(431, {n: v for n, v in head.items() if n[:1] != b":"}, body)


async def test_an_oversized_grpc_header_block_is_a_grpc_status_with_a_request_id(env, echo_up):
    env.publish([route(echo_up.port)])
    head, body, _ = await h2_refusal(env, [(b"content-type", b"application/grpc"), (b"te", b"trailers")])
    assert head[b":status"] == b"200" and head[b"content-type"] == b"application/grpc" and body == b""
    assert head[b"grpc-status"] == b"8"  # RESOURCE_EXHAUSTED, as the relay answers HeadersTooLarge
    assert REQUEST_ID.match(head[b"nvcf-reqid"])


class BrokenAdmission:
    """The gateway's limiter with a defect on its waiting path: no free slot, and `admit`
    fails with an error no part of the gateway expects (as an argument the limiter did not
    take once did). The call must be answered, not left waiting for its deadline."""

    def __init__(self, limiter) -> None:
        self.limiter = limiter

    def try_acquire(self, *args, **kwargs):
        return None

    async def admit(self, *args, **kwargs):
        raise TypeError("admit() got an unexpected keyword argument")


async def test_a_defect_in_admission_is_answered_500_at_once_and_the_gateway_goes_on(env, echo_up):
    env.publish([route(echo_up.port)])
    engine = env.gw.engine
    limiter = engine.limiter
    engine.limiter = BrokenAdmission(limiter)
    try:
        async with httpx.AsyncClient(base_url=env.url, timeout=5) as c:
            r = await c.post("/", content=b"x", headers=env.headers(**{"NVCF-POLL-SECONDS": "30"}))
    finally:
        engine.limiter = limiter
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "the gateway failed to route the request"
    assert REQUEST_ID.match(r.headers["nvcf-reqid"].encode())
    async with httpx.AsyncClient(base_url=env.url, timeout=5) as c:
        assert (await c.post("/", content=b"x", headers=env.headers())).status_code == 200
