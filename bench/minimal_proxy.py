"""The design's ceiling: an HTTP/1.1 reverse proxy with nothing but the mechanics.

asyncio.Protocol + httptools on uvloop, both directions, a keep-alive pool, one write
per message each way and no task: the same machinery as fngate's fast path, with none
of its features (no routing, keys, slots, queue, timeouts, metrics, NVCF headers,
header filtering, retries). The benchmark runs it beside nginx and fngate, so the gap
between it and nginx is what CPython and the event loop cost, and the gap between it
and fngate is what the features cost. Not a product: it trusts its upstream and its
clients completely.

    python -m fngate.bench.minimal_proxy --port P --upstream-port U
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import httptools
import uvloop

from fngate.proxy.config import LOOPBACK


class _Upstream(asyncio.Protocol):
    def __init__(self, pool: list) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: _Client | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        client = self.client
        self.parser.feed_data(data)  # only to see where the response ends
        if client is not None:
            assert client.transport is not None  # the client is connected
            client.transport.write(data)  # bytes pass through as they come (the upstream frames them)
            if self.client is None:
                self.pool.append(self)

    def on_message_complete(self) -> None:
        self.client = None


class _Client(asyncio.Protocol):
    def __init__(self, pool: list, upstream: tuple[str, int]) -> None:
        self.pool = pool
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.head: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.append(b"%s: %s\r\n" % (name, value))

    def on_message_complete(self) -> None:
        request = b"%s %s HTTP/1.1\r\n%s\r\n" % (self.parser.get_method(), self.url, b"".join(self.head))
        self.head = []
        if self.pool:
            up = self.pool.pop()
            up.client = self
            up.transport.write(request)
        else:
            asyncio.get_running_loop().create_task(self._connect(request))

    async def _connect(self, request: bytes) -> None:
        _, up = await asyncio.get_running_loop().create_connection(lambda: _Upstream(self.pool), *self.upstream)
        up.client = self
        assert up.transport is not None  # create_connection returns it connected
        up.transport.write(request)


async def _serve(port: int, upstream: tuple[str, int]) -> None:
    pool: list = []
    server = await asyncio.get_running_loop().create_server(lambda: _Client(pool, upstream), LOOPBACK, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    args = p.parse_args()
    uvloop.run(_serve(args.port, (LOOPBACK, args.upstream_port)))


if __name__ == "__main__":
    main()
