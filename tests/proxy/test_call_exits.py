"""The exits of a call that no other test executes, seen from outside: what a client
receives (status, bytes, how the stream ends), what the instance sees on its socket,
and the slot and queue counts the gateway publishes. Over HTTP/1.1 and HTTP/2, with
real httpx clients and raw-socket instances, so they hold for any engine."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest

from fngate.proxy.config import GatewayConfig

from .conftest import KEY, VID, route
from .h2client import RawH2Client

IDLE = 0.5  # the gateway's idle timeout in these tests
GRACE = 0.3  # added to NVCF-POLL-SECONDS before the 504
CONNECT_TIMEOUT = 4.0


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(
        http_port=0,
        grpc_port=0,
        admin_port=0,
        idle_timeout=IDLE,
        header_grace=GRACE,
        connect_timeout=CONNECT_TIMEOUT,
        client_header_timeout=5,
        client_body_idle_timeout=5,
        keepalive_timeout=10,
    )


class ScriptedInstance:
    """An HTTP/1.1 instance on a raw socket. `/stall` answers a chunked head and one
    chunk, then sends nothing more; `/silent` reads the request and never answers;
    `/trickle` sends a chunk every 50 ms for ever; anything else gets `200 ok`. Records
    how many requests arrived and how many of its connections the peer closed."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[bytes] = []
        self.open = 0
        self.peer_closed = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> ScriptedInstance:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                target = head.split(b" ", 2)[1]
                self.requests.append(target)
                if target.startswith(b"/stall"):
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    await writer.drain()
                    await reader.read()  # nothing more is sent; wait for the peer to go
                    self.peer_closed += 1
                    return
                if target.startswith(b"/silent"):
                    await reader.read()
                    self.peer_closed += 1
                    return
                if target.startswith(b"/trickle"):
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    while not reader.at_eof():
                        writer.write(b"5\r\ntick\n\r\n")
                        await writer.drain()
                        try:
                            await asyncio.wait_for(reader.read(1), 0.05)
                        except TimeoutError:
                            pass
                    self.peer_closed += 1
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.peer_closed += 1
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def scripted():
    up = await ScriptedInstance().start()
    yield up
    await up.stop()


async def until(cond: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    """Wait for `cond` to hold; fail if it does not within `within` seconds."""
    end = time.monotonic() + within
    while True:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        assert time.monotonic() < end, f"condition not reached in {within} s"
        await asyncio.sleep(0.02)


def in_flight(env) -> int:
    """Requests on an instance of the version, as the gateway's load report says."""
    version = env.gw.load_report().versions.get(VID)
    return 0 if version is None else version.in_flight


def queue_depth(env) -> int:
    version = env.gw.load_report().versions.get(VID)
    return 0 if version is None else version.queue_depth


PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])


def client(http2: bool, **kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=not http2, http2=http2, timeout=10, **kw)


# --- 1. idle timeout once the response has started ----------------------------------


@PROTOCOLS
async def test_stalled_instance_after_the_head_is_cut_at_the_idle_timeout(env, scripted, http2):
    env.publish([route(scripted.port, max_concurrency=1)])
    async with client(http2) as c:
        got = b""
        t0 = time.monotonic()
        async with c.stream("GET", f"{env.url}/stall", headers=env.headers()) as r:
            assert r.status_code == 200
            # a clean, detectable end: an incomplete chunked body (HTTP/1.1) or a reset stream
            with pytest.raises(httpx.RemoteProtocolError):
                async for chunk in r.aiter_raw():
                    got += chunk
        elapsed = time.monotonic() - t0
        assert got == b"hello"  # the bytes sent before the stall arrived intact
        assert IDLE * 0.9 < elapsed < IDLE + 3
        await until(lambda: scripted.peer_closed == 1)  # the instance's connection is closed
        await until(lambda: in_flight(env) == 0)
        r = await c.get(f"{env.url}/next", headers=env.headers())  # the one slot is free again
        assert r.status_code == 200 and r.content == b"ok"


async def test_h2_idle_cut_resets_only_that_stream_and_the_connection_carries_on(env, scripted):
    env.publish([route(scripted.port, max_concurrency=1)])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    c = RawH2Client(reader, writer)
    try:
        base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", env.host().encode())]
        auth = [(b"authorization", f"Bearer {KEY}".encode())]
        c.h2.send_headers(1, [*base, (b":path", b"/stall"), *auth], end_stream=True)
        c.flush()
        kind, _ = await c.outcome(1)
        assert kind == "reset" and c.bodies[1] == b"hello"  # reset, never a clean END_STREAM
        c.h2.send_headers(3, [*base, (b":path", b"/next"), *auth], end_stream=True)
        c.flush()
        assert await c.outcome(3) == ("response", b"200") and c.bodies[3] == b"ok"
    finally:
        writer.close()


# --- 2. the head deadline --------------------------------------------------------------


@PROTOCOLS
async def test_instance_that_never_answers_gets_504_at_the_poll_window_plus_grace(env, scripted, http2):
    env.publish([route(scripted.port, max_concurrency=1)])
    async with client(http2) as c:
        t0 = time.monotonic()
        r = await c.get(f"{env.url}/silent", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
        elapsed = time.monotonic() - t0
        assert r.status_code == 504 and r.content == b"" and r.headers["nvcf-status"] == "errored"
        assert 1 + GRACE * 0.9 < elapsed < 1 + GRACE + 3
        await until(lambda: scripted.peer_closed == 1)  # the instance's request is abandoned
        await until(lambda: in_flight(env) == 0)
        r = await c.get(f"{env.url}/next", headers=env.headers())
        assert r.status_code == 200 and r.content == b"ok"


# --- 3. client disconnects -------------------------------------------------------------


class RawCall:
    """One request from a hand-driven client, so the test decides exactly how the client
    goes away: HTTP/1.1 closes its socket, HTTP/2 resets its stream (CANCEL) and keeps
    the connection."""

    def __init__(self, env, http2: bool) -> None:
        self.env, self.http2 = env, http2
        self.body = b""

    async def start(self, path: str) -> RawCall:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.env.gw.http_port)
        if self.http2:
            self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            self.h2.initiate_connection()
            fields = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", self.env.host())]
            self.h2.send_headers(1, [*fields, ("authorization", f"Bearer {KEY}")], end_stream=True)
            self.writer.write(self.h2.data_to_send())
        else:
            head = f"GET {path} HTTP/1.1\r\nHost: {self.env.host()}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
            self.writer.write(head.encode())
        await self.writer.drain()
        return self

    async def some_body(self) -> None:
        """Read until the first response body bytes arrive."""
        received = b""
        async with asyncio.timeout(5):
            while not self.body:
                data = await self.reader.read(65536)
                assert data, "connection closed"
                if not self.http2:
                    received += data
                    self.body = received.partition(b"\r\n\r\n")[2]
                    continue
                for ev in self.h2.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived) and ev.data:
                        self.body += ev.data
                self.writer.write(self.h2.data_to_send())

    async def no_response_yet(self, within: float = 0.3) -> bool:
        """True if no response head arrives within `within` s (the request is still pending)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), within)
        except TimeoutError:
            return True
        if self.http2:
            events = self.h2.receive_data(data)
            self.writer.write(self.h2.data_to_send())
            return not any(isinstance(ev, (h2.events.ResponseReceived, h2.events.StreamReset)) for ev in events)
        return False

    def disconnect(self) -> None:
        if self.http2:
            self.h2.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
            self.writer.write(self.h2.data_to_send())
        else:
            self.writer.close()

    def close(self) -> None:
        self.writer.close()


@PROTOCOLS
async def test_client_gone_while_queued_leaves_the_queue_and_never_reaches_the_instance(env, scripted, http2):
    env.publish([route(scripted.port, max_concurrency=1)])
    busy = await RawCall(env, http2).start("/silent")
    queued = await RawCall(env, http2).start("/queued")
    try:
        await until(lambda: in_flight(env) == 1 and queue_depth(env) == 1)
        queued.disconnect()
        await until(lambda: queue_depth(env) == 0)
        busy.disconnect()
        await until(lambda: in_flight(env) == 0)
        assert scripted.requests == [b"/silent"]  # the cancelled waiter never went upstream
        async with client(http2) as c:
            r = await c.get(f"{env.url}/next", headers=env.headers())
            assert r.status_code == 200 and r.content == b"ok"
    finally:
        busy.close()
        queued.close()


@pytest.fixture
def unanswered_port():
    """A port whose accept queue is full: the kernel drops further SYNs, so a connect to
    it neither succeeds nor fails until the connecting side gives up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        with pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", port))
    finally:
        probe.close()
    yield port
    for s in [*fillers, server]:
        s.close()


@PROTOCOLS
async def test_client_gone_while_connecting_frees_the_slot_at_once(env, scripted, unanswered_port, http2):
    env.publish([route(unanswered_port, max_concurrency=1)])
    call = await RawCall(env, http2).start("/connecting")
    try:
        await until(lambda: in_flight(env) == 1)
        assert await call.no_response_yet()  # still connecting: the instance neither accepts nor refuses
        t0 = time.monotonic()
        call.disconnect()
        await until(lambda: in_flight(env) == 0)
        assert time.monotonic() - t0 < CONNECT_TIMEOUT - 1  # at once, not at the connect timeout
    finally:
        call.close()
    env.publish([route(scripted.port, max_concurrency=1)])
    async with client(http2) as c:
        r = await c.get(f"{env.url}/next", headers=env.headers())
        assert r.status_code == 200 and r.content == b"ok"


@PROTOCOLS
async def test_client_gone_while_streaming_closes_the_instance_connection_at_once(env, scripted, http2):
    env.publish([route(scripted.port, max_concurrency=1)])
    call = await RawCall(env, http2).start("/trickle")
    try:
        await call.some_body()
        assert scripted.peer_closed == 0
        t0 = time.monotonic()
        call.disconnect()
        await until(lambda: scripted.peer_closed == 1)
        assert time.monotonic() - t0 < 2  # at once, not at some timeout (idle is far off: data flows)
        await until(lambda: in_flight(env) == 0)
        async with client(http2) as c:
            r = await c.get(f"{env.url}/next", headers=env.headers())
            assert r.status_code == 200 and r.content == b"ok"
    finally:
        call.close()


# --- 4. grants and cancels racing at the concurrency limit ------------------------------


@PROTOCOLS
async def test_cancel_storm_at_the_concurrency_limit_leaks_no_slot(env, scripted, http2):
    limit, waiting = 3, 40
    env.publish([route(scripted.port, max_concurrency=limit, queue_limit=200)])
    for _ in range(3):
        holders = [await RawCall(env, http2).start("/silent") for _ in range(limit)]
        await until(lambda: in_flight(env) == limit)
        waiters = [await RawCall(env, http2).start(f"/w{i}") for i in range(waiting)]
        await until(lambda: queue_depth(env) == waiting)
        # free the slots and cancel every waiter without yielding in between: the gateway
        # sees the releases (each granting a waiter) and the cancels in the same loop ticks
        for call in holders + waiters:
            call.disconnect()
        await until(lambda: in_flight(env) == 0 and queue_depth(env) == 0)
        for call in holders + waiters:
            call.close()
    # every slot is usable: `limit` requests are on the instance at once, none queued
    held = [await RawCall(env, http2).start("/silent") for _ in range(limit)]
    try:
        await until(lambda: in_flight(env) == limit and queue_depth(env) == 0)
        for call in held:
            call.disconnect()
        await until(lambda: in_flight(env) == 0)
    finally:
        for call in held:
            call.close()
    async with client(http2) as c:
        r = await c.get(f"{env.url}/next", headers=env.headers())
        assert r.status_code == 200 and r.content == b"ok"


# --- 5. the gateway's own health ----------------------------------------------------------


@PROTOCOLS
async def test_gateway_health_on_its_ports(env, http2):
    ports = [env.gw.http_port, env.gw.grpc_port] if http2 else [env.gw.http_port]  # the gRPC port is HTTP/2 only
    async with client(http2) as c:
        for port in ports:
            for path in ("/health", "/v2/health/ready"):
                r = await c.get(f"http://127.0.0.1:{port}{path}")  # no key, no function: the gateway itself answers
                assert r.status_code == 200 and r.json() == {"status": "ok"}, (port, path)
                assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    async with httpx.AsyncClient() as c:
        r = await c.get(f"http://127.0.0.1:{env.gw.admin_port}/healthz")
        assert r.status_code == 200
