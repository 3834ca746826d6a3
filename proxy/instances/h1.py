"""One HTTP/1.1 connection to an instance, on asyncio.Protocol + httptools, driven by
callbacks: `start` writes a request head (and a whole body, when it is at hand), more
body bytes follow with `send_body` (never blocking: `backlogged` / `when_writable`
say when the instance takes more), and the response is pushed to a ResponseSink as it
is parsed, with one `flush()` after each batch of bytes from the socket, so everything
that arrived together leaves for the client in one write. A connection that ended its
exchange cleanly goes back to the pool (pool.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol

import httptools

from fngate.proxy.wire.flow import WriteFlow


class ResponseSink(Protocol):
    """Receives one response in callback mode (see the module docstring)."""

    def on_head(self, status: int, block: bytes) -> None:
        """`block`: the response's header lines as received (status line and blank line cut)."""

    def on_body(self, data: bytes) -> None: ...
    def on_end(self) -> None: ...
    def on_lost(self, msg: str, before_response: bool) -> None: ...
    def flush(self) -> None: ...


class H1Upstream:
    """An asyncio protocol (not derived from asyncio.Protocol, so that compiled it is an
    extension type: h1.pxd; asyncio only calls its methods)."""

    __slots__ = (
        "_any_byte",
        "_block",
        "_complete",
        "_keep_alive",
        "_no_body",
        "_raw",
        "_raw_pos",
        "_status",
        "closed",
        "flow",
        "idle_since",
        "key",
        "parser",
        "reusable_body",
        "sink",
        "transport",
    )

    def __init__(self, key: tuple[str, int]) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.key = key
        self.idle_since = 0.0
        self.closed = False
        self.flow = WriteFlow()
        self._status = 0
        self._complete = False
        self._no_body = False
        self._any_byte = False
        self.reusable_body = True  # the request body was sent whole
        self._keep_alive = False  # read at the response head: llhttp forgets it once complete
        self.sink: ResponseSink | None = None  # who gets the response
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
        sink = self.sink
        if sink is None:  # idle in the pool: bytes nobody asked for
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
        sink.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.sink is not None:
            self._lost(f"instance closed the connection: {exc or 'EOF'}")
        self.flow.connection_lost()

    def _lost(self, msg: str) -> None:
        sink = self.sink
        if self._complete or sink is None:
            return
        if self._status and not self._framed():  # a response without framing ends at EOF: complete
            self._complete = True
            sink.on_end()
            sink.flush()
        else:
            self.sink = None
            sink.on_lost(msg, not self._any_byte)

    def _framed(self) -> bool:
        lower = self._block.lower()
        return b"content-length" in lower or b"transfer-encoding" in lower

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- httptools callbacks ------------------------------------------------------------
    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        raw, pos = self._raw, self._raw_pos
        # llhttp accepted the head: CRLF line ends, all there
        if 100 <= status < 200 and status != 101:
            self._raw_pos = raw.find(b"\r\n\r\n", pos) + 4  # interim response (100 Continue, 103): not forwarded
            return
        # the status line, then the header lines (the last one's CRLF kept); partition takes
        # one argument, where find and index with a start parse an argument tuple (~1,000 each)
        head = (raw[pos:] if pos else raw).partition(b"\r\n\r\n")[0]
        fields = head.partition(b"\r\n")[2]
        self._block = block = fields + b"\r\n" if fields else b""
        self._raw = b""
        self._raw_pos = 0
        self._status = status
        self._keep_alive = self.parser.should_keep_alive()
        sink = self.sink
        if sink is None:
            return
        if self._complete:  # a second, unrequested response: never reuse this connection
            self.reusable_body = False
            return
        sink.on_head(status, block)
        if self._no_body or status in (204, 304):
            # httptools cannot be told a response has no body: end it here, never reuse
            self._complete = True
            self.reusable_body = False
            sink.on_end()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and not self._complete:
            self.sink.on_body(body)

    def on_message_complete(self) -> None:
        if self.sink is not None and self._status and not self._complete:  # (an interim 1xx response also ends here)
            self._complete = True
            self.sink.on_end()

    # -- used by the call ---------------------------------------------------------------
    def start(self, request: bytes, no_body: bool, sink: ResponseSink) -> None:
        """Send a request head (and its whole body, when at hand) and push the response
        to `sink`; `no_body`: the response has no body (HEAD)."""
        self._status = 0
        self._raw = b""
        self._raw_pos = 0
        self._block = b""
        self._complete = False
        self._no_body = no_body
        self._any_byte = False
        self.reusable_body = True
        transport = self.transport
        assert transport is not None  # the pool hands out made connections only
        if self.closed:  # closed by the instance before we wrote anything
            sink.on_lost("instance closed the connection", True)
            return
        self.sink = sink
        transport.write(request)

    def send_body(self, data: bytes) -> None:
        """More request body bytes; never blocks (see `backlogged`)."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def backlogged(self) -> bool:
        """The instance is not taking request bytes for now (its socket buffer is full)."""
        return self.flow.paused

    def when_writable(self, callback: Callable[[], None]) -> None:
        self.flow.when_writable(callback)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    @property
    def got_response_byte(self) -> bool:
        return self._any_byte

    def reusable(self) -> bool:
        return self._complete and self.reusable_body and self._keep_alive and not self.closed

    def reset_for_pool(self) -> None:
        self.sink = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """Close at once (RST): the client went away, the instance must see it now."""
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.abort()
