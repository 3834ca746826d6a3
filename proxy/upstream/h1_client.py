"""One HTTP/1.1 connection to an instance, on asyncio.Protocol + httptools.

The forwarder writes a request head and streams the body with `write`, then awaits
`response()` for the status and headers and pulls the body with `read()`. Reading
pauses when `max_buffer` bytes wait unread (backpressure to the instance). A
connection that ended its exchange cleanly goes back to the pool (pool.py).
"""

from __future__ import annotations

import asyncio
import socket

import httptools

from proxy.exchange import BodyBuffer, Headers


class UpstreamLost(Exception):
    """The instance closed or reset the connection. `before_response`: no response byte
    had arrived yet (the request may be retried when its body has not streamed)."""

    def __init__(self, msg: str, before_response: bool) -> None:
        super().__init__(msg)
        self.before_response = before_response


class H1Upstream(asyncio.Protocol):
    __slots__ = ("transport", "parser", "key", "idle_since", "closed", "_head", "_status", "_headers",
                 "_hname", "body", "_paused_write", "_drain", "_complete", "_no_body", "_any_byte",
                 "_limit", "reusable_body", "_keep_alive")

    def __init__(self, key: tuple[str, int], max_buffer: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.key = key
        self.idle_since = 0.0
        self.closed = False
        self._head: asyncio.Future | None = None
        self._status = 0
        self._headers: Headers = []
        self._hname = b""
        self.body: BodyBuffer | None = None
        self._paused_write = False
        self._drain: asyncio.Future | None = None
        self._complete = False
        self._no_body = False
        self._any_byte = False
        self._limit = max_buffer
        self.reusable_body = True  # the request body was sent whole
        self._keep_alive = False  # read at the response head: llhttp forgets it once complete

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._any_byte = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(f"invalid response from the instance: {exc}")
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head is not None or self.body is not None:
            self._lost(f"instance closed the connection: {exc or 'EOF'}")
        d = self._drain
        if d is not None and not d.done():
            d.set_exception(UpstreamLost("instance closed the connection", not self._any_byte))

    def _lost(self, msg: str) -> None:
        if self._complete:
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
        for n, _ in self._headers:
            if n == b"content-length" or n == b"transfer-encoding":
                return True
        return False

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
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._headers = []  # interim response (100 Continue, 103): not forwarded
            return
        self._status = status
        self._keep_alive = self.parser.should_keep_alive()
        self.body = BodyBuffer(self._limit, self._consumed)
        head = self._head
        if head is not None and not head.done():
            head.set_result((status, self._headers))
        if self._no_body or status in (204, 304):
            # httptools cannot be told a response has no body: end it here, never reuse
            self.body.feed_eof()
            self._complete = True
            self.reusable_body = False

    def on_body(self, body: bytes) -> None:
        buf = self.body
        if buf is None or self._complete:
            return
        buf.feed(body)
        if buf.full and self.transport is not None:
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.body is not None and not self._complete:
            self._complete = True
            self.body.feed_eof()

    def _consumed(self, n: int) -> None:
        buf = self.body
        if buf is not None and not buf.full and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- used by the forwarder ----------------------------------------------------------
    def start(self, head: bytes, no_body: bool) -> None:
        """Send a request head; `no_body`: the response has no body (HEAD)."""
        self._head = asyncio.get_running_loop().create_future()
        self._status = 0
        self._headers = []
        self.body = None
        self._complete = False
        self._no_body = no_body
        self._any_byte = False
        self.reusable_body = True
        if self.closed:  # closed by the instance before we wrote anything
            self._head.set_exception(UpstreamLost("instance closed the connection", True))
            return
        self.transport.write(head)

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise UpstreamLost("instance closed the connection", not self._any_byte)
        self.transport.write(data)
        if self._paused_write:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    async def response(self) -> tuple[int, Headers]:
        return await self._head

    @property
    def got_response_byte(self) -> bool:
        return self._any_byte

    def reusable(self) -> bool:
        return self._complete and self.reusable_body and self._keep_alive and not self.closed

    def reset_for_pool(self) -> None:
        self._head = None
        self.body = None

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
