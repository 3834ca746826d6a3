"""One HTTP/1.1 connection to an instance, on asyncio.Protocol + httptools.

Two ways to use it. Streamed (the forwarder's task): write a request head with
`start`, stream the body with `write`, await `response()` for the status and headers
and pull the body with `read()`; reading pauses when `max_buffer` bytes wait unread
(backpressure to the instance). Callbacks (the fast path, proxy/fast_call.py): `start_sink`
sends a whole request and the response is pushed to a ResponseSink as it is parsed,
with one `flush()` after each batch of bytes from the socket, so everything that
arrived together leaves for the client in one write. A connection that ended its
exchange cleanly goes back to the pool (pool.py).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import httptools

from fngate.proxy.exchange import BodyBuffer, Headers
from fngate.proxy.headers import parse_header_block


class ResponseSink(Protocol):
    """Receives one response in callback mode (see the module docstring)."""

    def on_head(self, status: int, block: bytes) -> None:
        """`block`: the response's header lines as received (status line and blank line cut)."""

    def on_body(self, data: bytes) -> None: ...
    def on_end(self) -> None: ...
    def on_lost(self, msg: str, before_response: bool) -> None: ...
    def flush(self) -> None: ...


class UpstreamLost(Exception):
    """The instance closed or reset the connection. `before_response`: no response byte
    had arrived yet (the request may be retried when its body has not streamed)."""

    def __init__(self, msg: str, before_response: bool = False) -> None:
        # the default: BodyBuffer.read raises a fresh copy built from `args` (the message only)
        super().__init__(msg)
        self.before_response = before_response


class H1Upstream(asyncio.Protocol):
    __slots__ = (
        "_any_byte",
        "_block",
        "_complete",
        "_drain",
        "_head",
        "_hname",
        "_keep_alive",
        "_limit",
        "_no_body",
        "_paused_write",
        "_raw",
        "_raw_pos",
        "_status",
        "body",
        "closed",
        "idle_since",
        "key",
        "parser",
        "reusable_body",
        "sink",
        "transport",
    )

    def __init__(self, key: tuple[str, int], max_buffer: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.key = key
        self.idle_since = 0.0
        self.closed = False
        self._head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] | None = None
        self._status = 0
        self._hname = b""
        self.body: BodyBuffer | None = None
        self._paused_write = False
        self._drain: asyncio.Future[None] | None = None
        self._complete = False
        self._no_body = False
        self._any_byte = False
        self._limit = max_buffer
        self.reusable_body = True  # the request body was sent whole
        self._keep_alive = False  # read at the response head: llhttp forgets it once complete
        self.sink: ResponseSink | None = None  # callback mode: who gets the response
        # The response head is taken as raw bytes (no per-header callback): kept from
        # data_received until llhttp has validated it, then cut at its blank line.
        self._raw = b""
        self._raw_pos = 0
        self._block = b""

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's transport is a Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.sink is None and self._head is None:  # idle in the pool: bytes nobody asked for
            self.close()
            return
        self._any_byte = True
        if not self._status:  # the head is still arriving
            self._raw = self._raw + data if self._raw else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(f"invalid response from the instance: {exc}")
            self.close()
            return
        sink = self.sink
        if sink is not None:
            sink.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head is not None or self.body is not None or self.sink is not None:
            self._lost(f"instance closed the connection: {exc or 'EOF'}")
        d = self._drain
        if d is not None and not d.done():
            d.set_exception(UpstreamLost("instance closed the connection", not self._any_byte))

    def _lost(self, msg: str) -> None:
        if self._complete:
            return
        sink = self.sink
        if sink is not None:
            if self._status and not self._framed():  # ended by EOF: complete
                self._complete = True
                sink.on_end()
                sink.flush()
            else:
                self.sink = None
                sink.on_lost(msg, not self._any_byte)
            return
        # a response without framing ends at EOF: that is a complete response
        if self.body is not None and self.parser.get_status_code() and not self._framed():
            self.body.feed_eof()
            self._complete = True
            return
        head = self._head
        if head is not None and not head.done():
            head.set_exception(UpstreamLost(msg, not self._any_byte))
        if self.body is not None:
            self.body.fail(UpstreamLost(msg, False))

    def _framed(self) -> bool:
        lower = self._block.lower()
        return b"content-length" in lower or b"transfer-encoding" in lower

    def pause_writing(self) -> None:
        self._paused_write = True

    def resume_writing(self) -> None:
        self._paused_write = False
        d = self._drain
        if d is not None:
            self._drain = None
            if not d.done():
                d.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------
    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        raw, pos = self._raw, self._raw_pos
        blank = raw.find(b"\r\n\r\n", pos)  # llhttp accepted the head: CRLF line ends, all there
        if 100 <= status < 200 and status != 101:
            self._raw_pos = blank + 4  # interim response (100 Continue, 103): not forwarded
            return
        line_end = raw.index(b"\n", pos) + 1
        self._block = block = raw[line_end : blank + 2] if blank > line_end else b""
        self._raw = b""
        self._raw_pos = 0
        self._status = status
        self._keep_alive = self.parser.should_keep_alive()
        sink = self.sink
        if sink is not None:
            if self._complete:  # a second, unrequested response: never reuse this connection
                self.reusable_body = False
                return
            sink.on_head(status, block)
            if self._no_body or status in (204, 304):  # see below
                self._complete = True
                self.reusable_body = False
                sink.on_end()
            return
        self.body = BodyBuffer(self._limit, self._consumed)
        head = self._head
        if head is not None and not head.done():
            head.set_result((status, parse_header_block(block)))
        if self._no_body or status in (204, 304):
            # httptools cannot be told a response has no body: end it here, never reuse
            self.body.feed_eof()
            self._complete = True
            self.reusable_body = False

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            if not self._complete:
                self.sink.on_body(body)
            return
        buf = self.body
        if buf is None or self._complete:
            return
        buf.feed(body)
        if buf.full and self.transport is not None:
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.sink is not None:
            if self._status and not self._complete:  # (an interim 1xx response also ends here)
                self._complete = True
                self.sink.on_end()
            return
        if self.body is not None and not self._complete:
            self._complete = True
            self.body.feed_eof()

    def _consumed(self, n: int) -> None:
        buf = self.body
        if buf is not None and not buf.full and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- used by the forwarder ----------------------------------------------------------
    def _connected(self) -> asyncio.Transport:
        transport = self.transport
        assert transport is not None  # the pool hands out made connections only
        return transport

    def start(self, head: bytes, no_body: bool) -> None:
        """Send a request head; `no_body`: the response has no body (HEAD)."""
        self._new_exchange(no_body)
        self._head = asyncio.get_running_loop().create_future()
        if self.closed:  # closed by the instance before we wrote anything
            self._head.set_exception(UpstreamLost("instance closed the connection", True))
            return
        self._connected().write(head)

    def start_sink(self, request: bytes, no_body: bool, sink: ResponseSink) -> None:
        """Send a whole request (head and body) and push the response to `sink`."""
        self._new_exchange(no_body)
        self._head = None
        self.sink = sink
        self._connected().write(request)

    def _new_exchange(self, no_body: bool) -> None:
        self._status = 0
        self._raw = b""
        self._raw_pos = 0
        self._block = b""
        self.body = None
        self._complete = False
        self._no_body = no_body
        self._any_byte = False
        self.reusable_body = True

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise UpstreamLost("instance closed the connection", not self._any_byte)
        self._connected().write(data)
        if self._paused_write:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    async def response(self) -> tuple[int, Headers]:
        head = self._head
        assert head is not None  # start() sent a request
        return await head

    @property
    def got_response_byte(self) -> bool:
        return self._any_byte

    def reusable(self) -> bool:
        return self._complete and self.reusable_body and self._keep_alive and not self.closed

    def reset_for_pool(self) -> None:
        self._head = None
        self.body = None
        self.sink = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """Close at once (RST): the client went away, the instance must see it now."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
