"""The HTTP/2 ceiling: an h2c -> HTTP/1.1 reverse proxy with nothing but the mechanics.

Clients speak h2c with prior knowledge to libnghttp2 through ngh2 (sans-IO: bytes in,
events out, bytes to send); each request stream goes to the upstream over a keep-alive
HTTP/1.1 connection parsed by httptools; uvloop runs both. Callbacks only, no task per
request (a task only while a new upstream connection is being opened), and one write per
client connection per loop iteration. The response streams back as it arrives: HEADERS
when the first body bytes (or the end) are there, each body chunk as DATA, END_STREAM on
the last DATA frame.

None of fngate's features: no routing, keys, slots, queue, timeouts, metrics, NVCF
headers or retries, no backpressure and no checks on the request beyond what nghttp2
itself enforces. It assumes every request without a body is a GET-like exchange (a HEAD
response would confuse the response parser). The h2c scenario runs it beside nginx,
nghttpx, haproxy and fngate, so the gap between it and the C proxies is what CPython and
the event loop cost over HTTP/2, and the gap between it and fngate is what fngate's own
per-request code costs. Not a product: it trusts its upstream and its clients.

    python -m fngate.bench.minimal_h2_proxy --port P --upstream-port U
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import ngh2
import uvloop
from ngh2 import DataReceived, RequestReceived, Role, Setting, StreamReset

from fngate.proxy.config import LOOPBACK

Headers = list[tuple[bytes, bytes]]

# HTTP/1.1 response fields that describe the upstream connection, not the response
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te", b"trailer"})
COLON = ord(":")
BAD_GATEWAY: Headers = [(b":status", b"502"), (b"content-length", b"0")]


class Upstream(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the upstream, carrying one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None  # whose stream the current response belongs to
        self.stream_id = 0
        self.head: Headers | None = None  # response head not yet handed to the client
        self.fields: Headers = []
        self.held: bytes | None = None  # the latest body chunk, kept so END_STREAM can ride on it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop sets TCP_NODELAY itself

    def send(self, client: Client, stream_id: int, request: bytes) -> None:
        self.client, self.stream_id = client, stream_id
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()  # connection_lost answers the stream
            return
        if self.client is not None and (self.head is not None or self.held is not None):
            self._push(False)  # the response goes on in a later read: pass on what has come

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()  # HTTP/2 field names are lower case
        if name not in HOP_BY_HOP:
            self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.head = [(b":status", b"%d" % self.parser.get_status_code()), *self.fields]
        self.fields = []

    def on_body(self, body: bytes) -> None:
        if self.held is not None:
            self._push(False)
        self.held = body

    def on_message_complete(self) -> None:
        self._push(True)
        self.client = None
        assert self.transport is not None
        if self.parser.should_keep_alive():
            self.pool.idle.append(self)
        else:
            self.transport.close()

    def _push(self, end_stream: bool) -> None:
        head, body, self.head, self.held = self.head, self.held, None, None
        if self.client is not None:
            self.client.respond(self.stream_id, head, body, end_stream)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.pool.idle.remove(self)
        except ValueError:
            pass
        client, self.client = self.client, None
        if client is not None:
            client.fail(self.stream_id)


class Pool:
    """Idle upstream connections, newest first; a new one is opened when none is idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Upstream] = []
        self._connecting: set[asyncio.Task[None]] = set()  # referenced until done

    def send(self, client: Client, stream_id: int, request: bytes) -> None:
        idle = self.idle
        while idle:
            upstream = idle.pop()
            if upstream.transport is not None and not upstream.transport.is_closing():
                upstream.send(client, stream_id, request)
                return
        task = asyncio.get_running_loop().create_task(self._connect(client, stream_id, request))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, client: Client, stream_id: int, request: bytes) -> None:
        try:
            _, upstream = await asyncio.get_running_loop().create_connection(lambda: Upstream(self), self.host, self.port)
        except OSError:
            client.fail(stream_id)
            return
        upstream.send(client, stream_id, request)


class Client(asyncio.Protocol):
    """One h2c client connection: ngh2 turns its bytes into request events and responses into frames."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.h2 = ngh2.Connection(Role.SERVER)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.receiving: dict[int, tuple[tuple[ngh2.Header, ...], list[bytes]]] = {}  # streams whose body is still arriving
        self.flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection({Setting.MAX_CONCURRENT_STREAMS: 256})  # as the nginx row allows
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        h2 = self.h2
        try:
            h2.receive_data(data)
        except ngh2.NGH2Error:
            self._flush()  # nghttp2 has queued a GOAWAY saying why
            self._close()
            return
        for event in h2.events():
            if isinstance(event, RequestReceived):
                if event.end_stream:
                    self._forward(event.stream_id, event.headers, b"")
                else:
                    self.receiving[event.stream_id] = (event.headers, [])
            elif isinstance(event, DataReceived):
                partial = self.receiving.get(event.stream_id)
                if partial is not None:
                    partial[1].append(event.data)
                    if event.end_stream:
                        del self.receiving[event.stream_id]
                        self._forward(event.stream_id, partial[0], b"".join(partial[1]))
            elif isinstance(event, StreamReset):
                self.receiving.pop(event.stream_id, None)
        self._flush()
        if not h2.want_read and not h2.want_write:
            self._close()  # GOAWAY exchanged and nothing left to send

    def _forward(self, stream_id: int, headers: tuple[ngh2.Header, ...], body: bytes) -> None:
        method, path, authority = b"GET", b"/", b""
        lines: list[bytes] = []
        for name, value in headers:
            if name[0] == COLON:
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
            elif name != b"content-length":  # the body is whole here; its length is written below
                lines.append(b"%s: %s\r\n" % (name, value))
        if authority:
            lines.append(b"host: %s\r\n" % authority)
        if body:
            lines.append(b"content-length: %d\r\n" % len(body))
        self.pool.send(self, stream_id, b"%s %s HTTP/1.1\r\n%s\r\n%s" % (method, path, b"".join(lines), body))

    def respond(self, stream_id: int, head: Headers | None, body: bytes | None, end_stream: bool) -> None:
        """Queue the response's head and/or a body chunk on the stream; the bytes go out in one write per loop iteration."""
        if self.closed:
            return
        h2 = self.h2
        try:
            if head is not None:
                h2.send_response(stream_id, head, end_stream=end_stream and body is None)
            if body is not None:
                h2.send_data(stream_id, body, end_stream=end_stream)
            elif end_stream and head is None:
                h2.end_stream(stream_id)
        except ngh2.NGH2Error:
            return  # the client reset the stream meanwhile
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def fail(self, stream_id: int) -> None:
        self.respond(stream_id, BAD_GATEWAY, None, True)

    def _flush(self) -> None:
        self.flush_scheduled = False
        out = self.h2.data_to_send()
        if out and not self.closed and self.transport is not None:
            self.transport.write(out)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # exchanges still at the upstream finish there; their answers are dropped
        self.receiving.clear()


async def serve(port: int, upstream_host: str, upstream_port: int) -> None:
    pool = Pool(upstream_host, upstream_port)
    server = await asyncio.get_running_loop().create_server(lambda: Client(pool), LOOPBACK, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    args = p.parse_args()
    uvloop.run(serve(args.port, LOOPBACK, args.upstream_port))


if __name__ == "__main__":
    main()
