"""The fast case of a call (proxy/calls/call.py): a complete request that finds a free slot
and an idle pooled instance connection is answered from protocol callbacks, no task.
Each test first warms the pool with one request, so the request under test takes that
case, and checks it behaves exactly like a call that had to connect: headers, retries,
timeouts, disconnects, streaming. The instances here are real sockets scripted per request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx
import pytest

from .conftest import route


@pytest.fixture
def gateway_config(gateway_config):
    return replace(gateway_config, header_grace=0.3)


class ScriptedInstance:
    """An HTTP/1.1 server on a free port; `script(n, reader, writer)` answers the n-th
    request of each connection (n from 1). It records the request heads it read."""

    def __init__(self, script) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> ScriptedInstance:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                n += 1
                if not await self.script(n, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\n%s\r\n%s" % (len(body), extra, body)


async def instance(script) -> ScriptedInstance:
    return await ScriptedInstance(script).start()


async def plain_then_events(n, reader, writer) -> bool:
    """A plain answer first (it warms the pool), then three events 0.3 s apart."""
    if n == 1:
        writer.write(ok())
        await writer.drain()
        return True
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(3):
        event = b"data: %d\n\n" % i
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.3)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def test_both_paths_send_and_return_the_same_headers(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        first = await c.post(f"{env.url}/v1/x?a=1", content=b"{}", headers=env.headers(**{"X-Custom": "1"}))
        second = await c.post(f"{env.url}/v1/x?a=1", content=b"{}", headers=env.headers(**{"X-Custom": "1"}))
    assert env.gw.pool.opened == 1  # the second request reused the pooled connection: the fast path
    assert first.status_code == second.status_code == 200
    varying = {"nvcf-reqid", "nvcf-asset-dir", "nvcf-large-output-dir", "date", "x-forwarded-for"}
    seen = [{k.lower(): v for k, v in r.json()["headers"].items() if k.lower() not in varying} for r in (first, second)]
    assert seen[0] == seen[1]
    assert seen[1]["x-custom"] == "1" and "authorization" not in seen[1]
    returned = [{k.lower() for k in r.headers} for r in (first, second)]
    assert returned[0] == returned[1]
    assert second.headers["nvcf-status"] == "fulfilled" and second.headers["nvcf-reqid"] != first.headers["nvcf-reqid"]
    assert second.json()["headers"]["NVCF-REQID"] == second.headers["nvcf-reqid"]


@pytest.mark.parametrize(
    "extra, gone",
    [
        (b"Keep-Alive: timeout=5\r\nNVCF-STATUS: spoofed\r\nX-Kept: yes\r\n", {"keep-alive"}),
        (b"Connection: x-private\r\nX-Private: secret\r\nX-Kept: yes\r\n", {"x-private"}),
    ],
)
async def test_instance_hop_by_hop_headers_are_dropped_on_both_paths(env, extra, gone):
    async def script(n, reader, writer):
        writer.write(ok(b"hi", extra))
        await writer.drain()
        return True

    up = await instance(script)
    try:
        env.publish([route(up.port)])
        async with httpx.AsyncClient() as c:
            answers = [await c.get(f"{env.url}/", headers=env.headers()) for _ in range(2)]
        for r in answers:
            assert r.status_code == 200 and r.text == "hi" and r.headers["x-kept"] == "yes"
            assert r.headers["nvcf-status"] == "fulfilled" and not gone & {k.lower() for k in r.headers}
    finally:
        await up.stop()


async def test_stale_pooled_connection_is_retried_on_a_new_one(env):
    """The instance drops a kept-alive connection when the next request arrives on it."""

    async def script(n, reader, writer):
        if n == 2:
            return False  # close without a response byte
        writer.write(ok())
        await writer.drain()
        return True

    up = await instance(script)
    try:
        env.publish([route(up.port)])
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
            r = await c.post(f"{env.url}/", content=b"again", headers=env.headers())
        assert r.status_code == 200 and r.text == "ok"
        assert env.gw.metrics.retries == 1 and up.connections == 2
        assert up.heads[-1].startswith(b"POST / HTTP/1.1") and b"content-length: 5" in up.heads[-1]
        await asyncio.sleep(0.05)
        assert env.gw.metrics.in_flight == 0 and not env.gw.limiter.in_flight
    finally:
        await up.stop()


async def test_no_response_head_within_the_poll_window_is_504(env):
    closed = asyncio.Event()

    async def script(n, reader, writer):
        if n == 2:  # never answer; see the gateway close the connection
            await reader.read()
            closed.set()
            return False
        writer.write(ok())
        await writer.drain()
        return True

    up = await instance(script)
    try:
        env.publish([route(up.port)])
        async with httpx.AsyncClient(timeout=10) as c:
            assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
            t0 = time.monotonic()
            r = await c.get(f"{env.url}/", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
            waited = time.monotonic() - t0
            assert r.status_code == 504 and r.content == b"" and r.headers["nvcf-status"] == "errored"
            assert 1.0 <= waited < 5
            # the client connection is still usable, and the instance connection was closed
            assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
        await asyncio.wait_for(closed.wait(), 5)
        assert env.gw.metrics.in_flight == 0 and not env.gw.limiter.in_flight
    finally:
        await up.stop()


async def test_client_disconnect_mid_response_closes_the_instance_connection(env):
    closed = asyncio.Event()

    async def script(n, reader, writer):
        if n == 1:
            writer.write(ok())
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial")
        await writer.drain()
        await reader.read()  # until the gateway closes the connection
        closed.set()
        return False

    up = await instance(script)
    try:
        env.publish([route(up.port)])
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
        h = env.headers()
        writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n\r\n" % (h["Host"].encode(), h["Authorization"].encode()))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(7) == b"partial"
        writer.close()
        await asyncio.wait_for(closed.wait(), 5)
        await asyncio.sleep(0.05)
        assert env.gw.metrics.in_flight == 0 and not env.gw.limiter.in_flight
        assert env.gw.metrics.client_disconnects == 1
    finally:
        await up.stop()


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_event_stream_is_relayed_event_by_event(env, http2):
    up = await instance(plain_then_events)
    try:
        env.publish([route(up.port)])
        async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=10) as c:
            assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
            arrivals = []
            async with c.stream("GET", f"{env.url}/", headers=env.headers(Accept="text/event-stream")) as r:
                assert r.headers["content-type"] == "text/event-stream"
                assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                assert env.gw.metrics.sse_open == 1
                async for chunk in r.aiter_raw():
                    arrivals.append((time.monotonic(), chunk))
        assert b"".join(c for _, c in arrivals) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        assert arrivals[-1][0] - arrivals[0][0] > 0.4  # not held until the end
        assert env.gw.metrics.sse_open == 0 and env.gw.pool.opened == 1
    finally:
        await up.stop()


async def test_http2_request_bodies_give_their_flow_control_credit_back(env, echo_up):
    """6 MiB of request bodies over one HTTP/2 connection, each request's HEADERS and
    DATA sent in one write (so the body is whole before it is forwarded): more than the
    connection's receive window, so every body must return its credit once forwarded."""
    import h2.config
    import h2.connection
    import h2.events

    env.publish([route(echo_up.port, max_concurrency=64)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    h = env.headers()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", h["Host"]),
        ("authorization", h["Authorization"]),
        ("content-length", "16000"),
    ]
    body = b"x" * 16000
    answered = 0

    def consume(data: bytes) -> int:
        ended = 0
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                assert dict(ev.headers)[b":status"] == b"200"
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            ended += isinstance(ev, h2.events.StreamEnded)
        writer.write(conn.data_to_send())
        return ended

    for _ in range(6 * 1024 * 1024 // len(body) + 1):
        while conn.outbound_flow_control_window < len(body):
            data = await asyncio.wait_for(reader.read(65536), 10)  # waits for WINDOW_UPDATE
            assert data, "the gateway closed the connection"
            answered += consume(data)
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers)
        conn.send_data(sid, body, end_stream=True)
        writer.write(conn.data_to_send())
    total = 6 * 1024 * 1024 // len(body) + 1
    while answered < total:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "the gateway closed the connection"
        answered += consume(data)
    writer.close()


@pytest.mark.parametrize(
    "reply, status, body",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end", 200, b"until the end"),
        (b"HTTP/1.0 201 Created\r\n\r\nold style", 201, b"old style"),
        (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", 204, b""),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 200, b"hi"),
        (b"NOT HTTP AT ALL\r\n\r\n", 502, None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntruncated", None, None),
    ],
)
async def test_unusual_instance_responses_on_the_fast_path(env, reply, status, body):
    async def script(n, reader, writer):
        writer.write(ok() if n == 1 else reply)
        await writer.drain()
        return n == 1

    up = await instance(script)
    try:
        env.publish([route(up.port)])
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
            if status is None:  # cut mid-body: the client must see an incomplete response, not a short success
                with pytest.raises(httpx.HTTPError):
                    await c.get(f"{env.url}/", headers=env.headers())
            else:
                r = await c.get(f"{env.url}/", headers=env.headers())
                assert r.status_code == status
                if body is not None:
                    assert r.content == body and r.headers["nvcf-reqid"]
                else:
                    assert r.json()["status"] == 502
            # the gateway keeps serving (on the same client connection unless it was cut)
            assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
        assert up.connections >= 2 and env.gw.metrics.in_flight == 0 and not env.gw.limiter.in_flight
    finally:
        await up.stop()


async def test_head_request_on_the_fast_path(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
        r = await c.head(f"{env.url}/?size=1000", headers=env.headers())
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "1000"
        assert (await c.get(f"{env.url}/?size=10", headers=env.headers())).content == b"x" * 10


async def test_bytes_from_an_idle_pooled_connection_retire_it(env):
    """An instance that sends the start of a second, unrequested response after the
    first: the gateway must not read it as the answer to the next request."""

    async def script(n, reader, writer):
        writer.write(ok(b"first"))
        await writer.drain()
        if n == 1:  # later, once the gateway has put the connection back in its pool
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nstray")
            await writer.drain()
        return True

    up = await instance(script)
    try:
        env.publish([route(up.port)])
        async with httpx.AsyncClient() as c:
            for _ in range(3):
                r = await c.get(f"{env.url}/", headers=env.headers(), timeout=3)
                assert r.status_code == 200 and r.text == "first"
                await asyncio.sleep(0.1)  # the stray bytes arrive while the connection is idle
    finally:
        await up.stop()


# -- HTTP/2 clients (proxy/drivers/h2_stream.py as the call's client side) -----------------------------


async def test_http2_both_paths_return_the_same_headers_and_body(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient(http1=False, http2=True) as c:
        first = await c.get(f"{env.url}/v1/x?size=3000", headers=env.headers())
        second = await c.get(f"{env.url}/v1/x?size=3000", headers=env.headers())
    assert env.gw.pool.opened == 1  # the second request took the pooled connection: the fast path
    assert first.http_version == second.http_version == "HTTP/2"
    assert first.status_code == second.status_code == 200 and first.content == second.content == b"x" * 3000
    assert {k.lower() for k in first.headers} == {k.lower() for k in second.headers}
    assert second.headers["nvcf-status"] == "fulfilled" and second.headers["nvcf-reqid"] != first.headers["nvcf-reqid"]
    await asyncio.sleep(0.05)
    assert env.gw.metrics.in_flight == 0 and not env.gw.limiter.in_flight


async def test_http2_response_larger_than_the_client_window_arrives_whole(env, echo_up):
    """A client with a 16 KiB window reading a 1 MiB body: the fast path waits for each
    WINDOW_UPDATE, pausing the instance, and loses nothing."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:  # warm the pool
        assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384})
    conn.initiate_connection()
    h = env.headers()
    conn.send_headers(
        1,
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/?size=1048576"),
            (":authority", h["Host"]),
            ("authorization", h["Authorization"]),
        ],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    got, status, ended = 0, None, False
    while not ended:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "the gateway closed the connection"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"]
            elif isinstance(ev, h2.events.DataReceived):
                got += len(ev.data)
                await asyncio.sleep(0.001)  # a slow reader
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended = True
        writer.write(conn.data_to_send())
    writer.close()
    assert status == b"200" and got == 1048576
    assert env.gw.pool.opened == 1  # it was the pooled connection: the fast path
    await asyncio.sleep(0.05)
    assert env.gw.metrics.in_flight == 0 and not env.gw.limiter.in_flight


async def test_slow_reader_on_the_fast_path_backpressures_the_instance(env, echo_up):
    """The client stops reading a 300 MB response: the gateway buffers at most about
    max_body_buffer for it, then stops reading from the instance; reading resumes the flow."""
    import psutil

    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
    mb = 1 << 20
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port, limit=64 * 1024)
    h = env.headers()
    writer.write(
        b"GET /?size=%d HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n\r\n" % (300 * mb, h["Host"].encode(), h["Authorization"].encode())
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await reader.read(64 * 1024)
    assert env.gw.pool.opened == 1  # the pooled connection: the fast path
    before = psutil.Process().memory_info().rss
    await asyncio.sleep(1.0)  # not reading
    grown = psutil.Process().memory_info().rss - before
    got = 0
    while got < 8 * mb:
        chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
        assert chunk
        got += len(chunk)
    writer.close()
    assert grown < 20 * mb, grown


@pytest.mark.parametrize("warm", [True, False], ids=["pooled", "connecting"])
async def test_an_instance_that_dies_mid_response_cuts_the_client_response(env, warm):
    """The instance closes its connection in the middle of a chunked (SSE-like) body: the
    client must see the response is incomplete (no terminal chunk, the connection cut),
    on the callback path (pooled connection) and on the connecting path alike."""

    async def script(n, reader, writer):
        if n == 1 and warm:
            writer.write(ok())
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"8\r\ndata: 1\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()  # the process died: RST, no terminal chunk
        return False

    up = await instance(script)
    try:
        env.publish([route(up.port)])
        if warm:
            async with httpx.AsyncClient() as c:
                assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
        h = env.headers()
        writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n\r\n" % (h["Host"].encode(), h["Authorization"].encode()))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        rest = await asyncio.wait_for(reader.read(), 5)  # until the gateway closes the connection
        assert rest.startswith(b"8\r\ndata: 1\n\r\n") and not rest.endswith(b"0\r\n\r\n"), rest
        writer.close()
        await asyncio.sleep(0.05)
        assert env.gw.metrics.in_flight == 0 and not env.gw.limiter.in_flight
    finally:
        await up.stop()
