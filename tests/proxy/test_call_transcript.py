"""A call without sockets: request bytes into the HTTP/1.1 driver, the instance's bytes
into its pooled connection, and what each side's transport was given. The fast case
(complete request, free slot, idle pooled connection) is one write to the instance and
one to the client, and starts no task; a streamed body and a slow client show the
backpressure both ways as calls to pause and resume reading."""

from __future__ import annotations

import asyncio
import time

from fngate.proxy.calls.call import Engine
from fngate.proxy.calls.dispatch import Invocations
from fngate.proxy.calls.exchange import OpenConnections
from fngate.proxy.calls.metrics import Metrics
from fngate.proxy.config import GatewayConfig
from fngate.proxy.drivers.h1 import H1Server
from fngate.proxy.instances.h1 import H1Upstream
from fngate.proxy.instances.pool import H1Pool
from fngate.proxy.routing.limiter import Limiter
from fngate.proxy.routing.snapshot import KeyGrant, RoutingTable, SnapshotHolder, key_digest

from .conftest import FID, KEY, VID, route

PORT = 40001
REQUEST = b"GET /v1/x HTTP/1.1\r\nHost: %s.invocation.example\r\nAuthorization: Bearer %s\r\n\r\n" % (FID.encode(), KEY.encode())
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"


class Transport:
    """What a protocol sees of a socket: writes kept one by one, reading paused or not."""

    def __init__(self, peer: tuple[str, int] = ("10.0.0.9", 5555)) -> None:
        self.writes: list[bytes] = []
        self.reading = True
        self.closed = False
        self.buffered = 0  # what get_write_buffer_size reports
        self.peer = peer

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_extra_info(self, name: str, default=None):
        return self.peer if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close


def gateway(**config) -> tuple[Engine, H1Server, Transport, H1Upstream, Transport]:
    """A driver on a fake client socket, an engine whose pool holds one idle instance
    connection on a fake instance socket."""
    cfg = GatewayConfig(http_port=0, grpc_port=None, admin_port=None, **config)
    holder = SnapshotHolder()
    grant = KeyGrant("k1", frozenset({"invoke_function"}), None, subject="alice")
    holder.publish(RoutingTable.build(1, [route(PORT)], [(key_digest(KEY), grant)]))
    pool = H1Pool(30.0, 8, 1.0)
    engine = Engine(cfg, holder, Limiter(holder), pool, Metrics())
    upstream_transport = Transport(("127.0.0.1", PORT))
    upstream = H1Upstream(("127.0.0.1", PORT))
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]  # a fake socket
    upstream.idle_since = time.monotonic()
    pool.idle[("127.0.0.1", PORT)] = [upstream]
    server = H1Server(cfg, Invocations(engine), OpenConnections())
    client_transport = Transport()
    server.connection_made(client_transport)  # type: ignore[arg-type]  # a fake socket
    return engine, server, client_transport, upstream, upstream_transport


async def test_the_fast_case_is_one_write_each_way_and_no_task():
    engine, server, client, upstream, instance = gateway()
    tasks = len(asyncio.all_tasks())
    server.data_received(REQUEST)
    (request,) = instance.writes  # head in one write
    assert request.startswith(b"GET /v1/x HTTP/1.1\r\nhost: 127.0.0.1:40001\r\n") and b"NVCF-SUB: alice\r\n" in request
    assert engine.metrics.in_flight == 1 and engine.limiter.in_flight[f"{VID}-0"] == 1
    upstream.data_received(RESPONSE)
    (answer,) = client.writes
    assert answer.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nnvcf-reqid: ")
    assert answer.endswith(b"nvcf-status: fulfilled\r\n\r\nhello")
    assert len(asyncio.all_tasks()) == tasks  # no coroutine ran for it
    assert engine.metrics.in_flight == 0 and engine.limiter.in_flight.get(f"{VID}-0", 0) == 0
    assert engine.pool.idle[("127.0.0.1", PORT)] == [upstream]  # back in the pool
    server.data_received(REQUEST)  # keep-alive: the next request takes the same connection
    assert len(instance.writes) == 2


async def test_a_streamed_body_waits_for_the_instance_and_the_client_waits_for_both():
    engine, server, client, upstream, instance = gateway(max_body_buffer=16)
    head = REQUEST.replace(b"GET", b"POST").replace(b"\r\n\r\n", b"\r\ntransfer-encoding: chunked\r\n\r\n")
    server.data_received(head)
    assert instance.writes[0].split(b"\r\n\r\n")[0].endswith(b"via: 1.1 fngate")
    assert b"transfer-encoding: chunked\r\n" in instance.writes[0]
    upstream.pause_writing()  # the instance's socket is full
    server.data_received(b"10\r\n" + b"a" * 16 + b"\r\n")
    assert instance.writes[-1] == b"10\r\n" + b"a" * 16 + b"\r\n"  # written, not acknowledged
    assert not client.reading  # the gateway's buffer for it is full: the client waits
    upstream.resume_writing()
    assert client.reading  # taken by the instance: read on
    server.data_received(b"0\r\n\r\n")
    assert instance.writes[-1] == b"0\r\n\r\n"
    # the response: a slow client pauses reading from the instance until it drains
    upstream.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert client.writes[-1].endswith(b"\r\n\r\n3\r\nabc\r\n")
    client.buffered = 1 << 20
    server.pause_writing()
    upstream.data_received(b"3\r\ndef\r\n")
    assert not instance.reading
    client.buffered = 0
    server.resume_writing()
    assert instance.reading
    upstream.data_received(b"0\r\n\r\n")
    assert client.writes[-2:] == [b"3\r\ndef\r\n", b"0\r\n\r\n"] and engine.metrics.in_flight == 0


async def test_an_instance_that_closes_before_answering_is_retried_then_answered_502():
    engine, server, client, upstream, _instance = gateway()
    server.data_received(REQUEST)
    upstream.connection_lost(None)  # a stale keep-alive connection: the call retries, connecting anew
    assert engine.metrics.retries == 1 and engine.metrics.upstream_errors == {"reset": 1}
    await asyncio.sleep(0.05)  # the connect to a port nothing listens on is refused: 502
    for _ in range(100):
        if client.writes:
            break
        await asyncio.sleep(0.02)
    assert client.writes[0].startswith(b"HTTP/1.1 502 ")
    assert engine.metrics.in_flight == 0 and engine.limiter.in_flight.get(f"{VID}-0", 0) == 0


async def test_a_client_gone_mid_response_aborts_the_instance_connection():
    engine, server, _client, upstream, instance = gateway()
    server.data_received(REQUEST)
    upstream.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
    server.connection_lost(None)
    assert instance.closed and engine.metrics.client_disconnects == 1 and engine.metrics.in_flight == 0
    assert ("127.0.0.1", PORT) not in engine.pool.idle or engine.pool.idle[("127.0.0.1", PORT)] == []
