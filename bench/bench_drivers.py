"""The client-side drivers, bytes in -> exchange -> response bytes out, without sockets.

Each round pushes BATCH requests through one connection on a real event loop; the
exchange is answered at once (a 2-byte 200), so the figure is the driver's own cost
per request: parsing, the Exchange, response framing (h1: httptools; h2: ngh2, libnghttp2).
Each request goes to the handler's `start`, as in the gateway.
Divide the mean by BATCH for the cost of one request.
"""

from __future__ import annotations

import asyncio

import uvloop
from ngh2 import Configuration, Connection, Role

from fngate.proxy.calls.exchange import OpenConnections
from fngate.proxy.config import LOOPBACK, GatewayConfig
from fngate.proxy.drivers.h1 import H1Server
from fngate.proxy.drivers.h2 import H2Server

BATCH = 1000
REQUEST = (
    b"GET /v1/infer HTTP/1.1\r\nHost: fn.invocation.localhost\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nAuthorization: Bearer nvapi-secret\r\n\r\n"
)


class _Transport(asyncio.Transport):
    """Collects what the driver writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data) -> None:
        self.written += len(data)

    def get_extra_info(self, name, default=None):
        return (LOOPBACK, 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Answer:
    """Stands where the gateway's handler is: answers every exchange at once."""

    def start(self, ex) -> None:
        ex.start_response(200, [(b"content-length", b"2")])
        ex.send(b"ok")
        ex.end()


def test_h1_driver_1000_keepalive_requests(benchmark):
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    transport = _Transport()

    async def setup() -> H1Server:
        proto = H1Server(GatewayConfig(), _Answer(), OpenConnections())
        proto.connection_made(transport)
        return proto

    proto = loop.run_until_complete(setup())

    async def batch() -> None:
        for _ in range(BATCH):
            proto.data_received(REQUEST)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    try:
        benchmark(lambda: loop.run_until_complete(batch()))
        assert transport.written > 0 and not proto.closed
    finally:
        loop.close()


def _h2_requests(count: int) -> tuple[bytes, list[bytes]]:
    """The client preface and `count` HEADERS frames (END_STREAM), encoded up front by one
    client connection (one HPACK state), so only the server side is timed."""
    client = Connection(Role.CLIENT, Configuration(peer_max_concurrent_streams=count + 1))
    client.initiate_connection()
    preface = client.data_to_send()
    headers = [
        (b":method", b"GET"),
        (b":path", b"/v1/infer"),
        (b":scheme", b"http"),
        (b":authority", b"fn.invocation.localhost"),
        (b"authorization", b"Bearer nvapi-secret"),
    ]
    frames = []
    for _ in range(count):
        client.send_request(headers, end_stream=True)
        frames.append(client.data_to_send())
    return preface, frames


def test_h2_driver_1000_streams(benchmark):
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    transport = _Transport()
    rounds = 10
    preface, frames = _h2_requests(BATCH * (rounds + 1))
    batches = [frames[i : i + BATCH] for i in range(0, len(frames), BATCH)]

    async def setup() -> H2Server:
        proto = H2Server(GatewayConfig(), _Answer(), OpenConnections())
        proto.connection_made(transport)
        proto.data_received(preface)
        return proto

    proto = loop.run_until_complete(setup())
    feed = iter(batches)

    async def batch() -> None:
        for frame in next(feed):
            proto.data_received(frame)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    try:
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=rounds, iterations=1, warmup_rounds=1)
        assert transport.written > 0 and not proto.closed
    finally:
        loop.close()
