"""HTTP/1.1 server driver on asyncio.Protocol + httptools.

Bytes in -> one H1Exchange per request (the seam of proxy/calls/exchange.py), handed to the
RequestHandler the driver was made with: a request with no body or a small one
(`whole_body`) once it has fully arrived, so the call can send it in one write; any
other as soon as its head is parsed, its body then pushed as it arrives.
Keep-alive and pipelining (requests answered strictly in order), request bodies
streamed with backpressure (reading pauses while `max_body_buffer` bytes wait),
responses framed by Content-Length, chunked, or close. Slow clients are cut by
timers: the request head must arrive within `client_header_timeout`, a stalled body
within `client_body_idle_timeout`, an idle keep-alive connection after
`keepalive_timeout`. Malformed input gets 400/431 and the connection closed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from fngate.proxy.calls.exchange import ENDED_EMPTY, BodyListener, Exchange, Headers, OpenConnections, RequestBody, RequestHandler
from fngate.proxy.calls.request_ids import new_request_id
from fngate.proxy.errors import BadRequest, HeadersTooLarge, ProxyError, RequestTimeout, error_fields
from fngate.proxy.wire.flow import WriteFlow
from fngate.proxy.wire.headers import check_target, valid_host

if TYPE_CHECKING:
    from fngate.proxy.config import GatewayConfig

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_NO_BODY_STATUS = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
WHOLE_BODY_MAX = 64 * 1024  # request bodies up to this size are received before forwarding
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
# absolute-form (RFC 9112 3.2.2): its authority replaces Host, the rest is the target
_ABSOLUTE_FORM = re.compile(rb"(?i:https?)://([^/?#]*)(.*)", re.S).fullmatch


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


class H1Exchange(Exchange):
    __slots__ = ("_head", "_out", "chunked", "conn", "keep_alive", "no_body", "request_done", "whole_body")
    conn: H1Server  # the base names it `object`; here it is the HTTP/1.1 driver

    def __init__(
        self,
        conn: H1Server,
        method: str,
        target: bytes,
        headers: Headers,
        authority: bytes,
        keep_alive: bool,
        expect_continue: bool,
        whole_body: bool,
        body: RequestBody,
    ) -> None:
        # Exchange's fields, set here rather than through super().__init__: once per request
        self.method = method
        self.target = target
        self.headers = headers
        self.authority = authority
        self.client_addr = conn.client_addr
        self.http2 = False
        self.body = body
        self.on_disconnect = None
        self.response_started = False
        self.finished = False
        self.extra_headers = None
        self.conn = conn
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.chunked = False
        self.no_body = method == "HEAD"
        self.request_done = False
        self.scheme = conn.scheme
        self._head = b""  # the response head, held back to go out with the first body bytes
        self._out: list[bytes] = []  # framed body bytes queued by send, written by flush
        self.whole_body = whole_body  # handed over once complete (see the module docstring)

    def read_body(self, listener: BodyListener) -> None:
        if self.expect_continue:
            self.expect_continue = False
            if not self.body.eof and not self.response_started and not self.conn.closed:
                self.conn.transport.write(_CONTINUE)
        self.body.attach(listener)

    def start_response(self, status: int, headers: Headers) -> None:
        lines = b"".join([b"%s: %s\r\n" % hv for hv in headers])
        framed = any(n == b"content-length" for n, _ in headers)
        self._start(status, lines, framed)

    def start_response_block(self, status: int, lines: bytes, framed: bool, request_id: bytes, nvcf_status: bytes) -> None:
        # joined, not %-formatted: bytes formatting costs more than the join
        self._start(status, b"".join((lines, b"nvcf-reqid: ", request_id, b"\r\nnvcf-status: ", nvcf_status, b"\r\n")), framed)

    def _start(self, status: int, lines: bytes, framed: bool) -> None:
        self.response_started = True
        if self.extra_headers:
            lines += b"".join([b"%s: %s\r\n" % hv for hv in self.extra_headers])
        if self.no_body or status in _NO_BODY_STATUS or status < 200:
            self.no_body = True
        elif not framed:
            if self.conn.http11:
                self.chunked = True
                lines += b"transfer-encoding: chunked\r\n"
            else:
                self.keep_alive = False
        if not self.keep_alive:
            lines += b"connection: close\r\n"
        try:
            line = _STATUS_LINES[status]  # (a subscript: no function call per response)
        except KeyError:
            line = status_line(status)
        self._head = line + lines + b"\r\n"

    def send(self, data: bytes) -> None:
        if data and not self.no_body:
            self._out.append(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    def flush(self) -> None:
        head, self._head = self._head, b""
        out = self._out
        if out:
            data = head + out[0] if len(out) == 1 else head + b"".join(out)
            out.clear()
        else:
            data = head
        if data and not self.conn.closed:
            self.conn.transport.write(data)

    def end(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.chunked:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self.conn.exchange_done(self)

    def abort(self) -> None:
        self.finished = True
        self._out.clear()
        self.conn.abort()

    def backlogged(self) -> bool:
        # The client's transport may hold up to max_body_buffer first: pausing at every
        # high-water mark would cost two epoll calls per 64 KiB.
        conn = self.conn
        return conn.closed or (conn.flow.paused and conn.transport.get_write_buffer_size() >= conn.config.max_body_buffer)

    def when_writable(self, callback: Callable[[], None]) -> None:
        if self.conn.closed:
            callback()
        else:
            self.conn.flow.when_writable(callback)


class H1Server:
    """An asyncio protocol (not derived from asyncio.Protocol, so that compiled it is an
    extension type: h1.pxd; asyncio only calls its methods)."""

    __slots__ = (
        "_body_timeout",
        "_current",
        "_deadline",
        "_feeding",
        "_good_host",
        "_head_bytes",
        "_header_timeout",
        "_headers",
        "_in_head",
        "_keepalive_timeout",
        "_loop",
        "_max_head",
        "_parsing",
        "_pending",
        "_read_paused",
        "_ready",
        "_timer",
        "_timer_at",
        "_url",
        "client_addr",
        "closed",
        "config",
        "connections",
        "draining",
        "flow",
        "handler",
        "http11",
        "parser",
        "scheme",
        "transport",
    )

    def __init__(self, config: GatewayConfig, handler: RequestHandler, connections: OpenConnections) -> None:
        self.config = config
        self.handler = handler
        self.connections = connections
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made sets it; asyncio calls it first
        self.parser = httptools.HttpRequestParser(self)
        self.client_addr = ""
        self.closed = False
        self.flow = WriteFlow()
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        # (config is frozen: what is read per request or per header field is kept as C numbers)
        self._max_head = config.max_header_bytes
        self._header_timeout = config.client_header_timeout
        self._keepalive_timeout = config.keepalive_timeout
        self._body_timeout = config.client_body_idle_timeout
        self._in_head = False  # a request head has begun and is not complete yet
        self._good_host = b""  # the last Host value found valid (a client repeats it)
        self._parsing: H1Exchange | None = None  # request whose body is being received
        self._pending: deque[H1Exchange] = deque()  # pipelined, waiting for their turn
        self._current: H1Exchange | None = None  # the one being answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set with transport, in connection_made
        self._read_paused = False
        self._feeding = False  # inside parser.feed_data
        self._ready: H1Exchange | None = None  # the request to hand over once the batch is parsed
        self.http11 = True
        self.scheme = b"http"
        self.draining = False  # the gateway is stopping: close after the current answer

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's transport is a Transport
        self._loop = asyncio.get_running_loop()
        self.connections.add(self)
        if transport.get_extra_info("ssl_object") is not None:
            self.scheme = b"https"
        peer = transport.get_extra_info("peername")
        self.client_addr = peer[0] if peer else ""
        self._arm(self._header_timeout)

    def data_received(self, data: bytes) -> None:
        # A request opened by this batch starts once the whole batch is parsed, so bytes
        # after its head that break the protocol get their 400 before any answer.
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(BadRequest("protocol upgrade is not supported"))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__cause__ or exc.__context__, ProxyError):
                self._reject(exc.__cause__ or exc.__context__)  # type: ignore[arg-type]  # a ProxyError, checked above
            else:
                self._reject(BadRequest(f"malformed HTTP/1.1 request: {exc}"))
        self._feeding = False
        ex = self._ready
        if ex is not None:
            self._ready = None
            if not self.closed and ex is self._current:
                self.handler.start(ex)

    def _hand_over(self, ex: H1Exchange) -> None:
        if self._feeding:
            self._ready = ex
        else:
            self.handler.start(ex)

    def eof_received(self) -> bool | None:
        """The client half-closed: None lets the transport close, as asyncio.Protocol's
        default did (an asyncio protocol by its methods: this one must be spelled out)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for ex in (self._current, self._parsing, *self._pending):
            if ex is not None:
                ex.client_gone()
        self.flow.connection_lost()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._in_head = True
        if self._current is None:  # else exchange_done arms it, once the answer is out
            self._arm(self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            raise HeadersTooLarge("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head:
            raise HeadersTooLarge("request head too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self.parser
        headers = self._headers
        authority = length = coding = b""
        cl = te = hosts = 0
        expect = connection = False
        for n, v in headers:
            if n == b"host":
                authority = v
                hosts += 1
            elif n == b"content-length":
                cl += 1
                length = v
            elif n == b"transfer-encoding":
                te += 1
                coding = v
            elif n == b"expect" and v.lower() == b"100-continue":
                expect = True
            elif n == b"connection" or n == b"proxy-connection":
                connection = True
        if (cl and te) or cl > 1 or te > 1:
            raise BadRequest("conflicting Content-Length / Transfer-Encoding")
        if te and coding.strip().lower() != b"chunked":  # the gateway re-frames the body: it cannot pass other codings on
            raise BadRequest("a request transfer coding other than chunked is not supported")
        keep_alive = p.should_keep_alive()
        # Without a Connection (or Proxy-Connection) field llhttp keeps a request alive
        # exactly when it is HTTP/1.1 (of the versions it takes: 0.9, 1.0, 1.1, 2.0), which
        # spares get_http_version's str.format (~2,500 instructions a request);
        # tests/proxy/test_h1_version.py holds the installed httptools to that
        self.http11 = http11 = keep_alive if not connection else p.get_http_version() == "1.1"
        if hosts != 1:  # RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in 1.0
            if hosts or http11:
                raise BadRequest("an HTTP/1.1 request needs exactly one Host field")
        elif authority != self._good_host:
            if authority and not valid_host(authority):
                raise BadRequest("invalid Host field")
            self._good_host = authority
        whole = not te and not expect and (not cl or (length.isdigit() and int(length) <= WHOLE_BODY_MAX))
        raw_method = p.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        target = self._url
        if target[:1] != b"/" or target.find(b"#") >= 0:  # (`b"#" in target` would raise and clear a TypeError)
            absolute = _ABSOLUTE_FORM(target)
            if absolute is not None:
                authority, target = absolute.groups()
                if not authority or not valid_host(authority):
                    raise BadRequest("invalid authority in the request target")
                if target[:1] != b"/":
                    target = b"/" + target
            check_target(method, target)
        ex = H1Exchange(
            self,
            method,
            target,
            headers,
            authority,
            keep_alive,
            expect,
            whole,
            RequestBody(self.config.max_body_buffer, self.body_consumed) if cl or te else ENDED_EMPTY,
        )
        self._parsing = ex
        if self._current is None:
            self._start(ex)
        else:
            self._pending.append(ex)
            self._pause_reading()  # one pipelined request at a time is enough

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is not None:
            ex.body.feed(body)
            if ex.body.full:
                self._pause_reading()
            if ex is self._current:
                self._arm(self._body_timeout)

    def on_message_complete(self) -> None:
        ex = self._parsing
        if ex is not None:
            self._parsing = None
            ex.request_done = True
            ex.body.feed_eof()
            if ex is self._current:
                self._disarm()
                if ex.whole_body:
                    self._hand_over(ex)

    # -- exchanges ----------------------------------------------------------------------
    def _start(self, ex: H1Exchange) -> None:
        self._current = ex
        if ex.request_done:
            self._disarm()
        else:
            self._arm(self._body_timeout)
        if not ex.whole_body or ex.request_done:  # else on_message_complete starts it
            self._hand_over(ex)

    def exchange_done(self, ex: H1Exchange) -> None:
        if self.closed:
            return
        if not ex.keep_alive or not ex.request_done or self.draining:
            # an unread request body cannot be skipped safely: close
            self.close()
            return
        self._current = None
        # The next head may have begun already (pipelined, cut anywhere): its url and
        # fields stay where the parser put them, and it gets the header timeout.
        if self._pending:
            nxt = self._pending.popleft()
            self._resume_reading()
            self._start(nxt)
        else:
            self._arm(self._header_timeout if self._in_head else self._keepalive_timeout)
            self._resume_reading()

    def body_consumed(self, n: int) -> None:
        ex = self._parsing
        if self._read_paused and not self._pending and (ex is None or not ex.body.full):
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    # -- errors and timers --------------------------------------------------------------
    def _reject(self, err: ProxyError) -> None:
        """A request that cannot be parsed: answer it and close the connection."""
        if self.closed:
            return
        if self._current is None or not self._current.response_started:
            request_id = new_request_id()
            headers, body = error_fields(err, request_id)  # the error root every answer shares
            fields = b""
            for name, value in headers:  # (a loop: no closure in a compiled cpdef method)
                fields += b"%s: %s\r\n" % (name, value)
            self.transport.write(status_line(err.http_status) + fields + b"connection: close\r\n\r\n" + body)
            # the access log's line (proxy/calls/observation.py); a request the handler has logs its own
            observers = getattr(self.handler, "observers", None) if self._current is None else None
            if observers is not None:
                observers.answered("http/1.1", request_id, time.monotonic(), self.client_addr, err.http_status, 0, len(body))
        self.close()

    # One timer per connection, moved by setting a deadline: re-arming per request costs
    # an attribute store, and the timer re-schedules itself only when it fires early.
    def _arm(self, delay: float) -> None:
        loop = self._loop
        deadline = loop.time() + delay
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._check_deadline)

    def _disarm(self) -> None:
        self._deadline = 0.0

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if not deadline or self.closed:
            return
        if self._loop.time() < deadline:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._check_deadline)
            return
        self._deadline = 0.0
        self._timed_out()

    def _timed_out(self) -> None:
        ex = self._current
        if ex is not None and ex.request_done:
            return  # the instance is working: its timeouts are the call's business
        if ex is None and self._parsing is None and not self._in_head:
            self.close()  # idle keep-alive connection, or nothing arrived: just close
        elif ex is not None and ex.response_started:
            self.close()
        else:
            self._reject(RequestTimeout("request not received in time"))

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else right after the answer in progress."""
        self.draining = True
        if self._current is None:
            self.close()
        elif not self._current.response_started:
            self._current.keep_alive = False  # the answer will say `connection: close`

    def abort(self) -> None:
        """Drop the connection now, unsent bytes included (a response cut mid-way)."""
        self.close()
        self.transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._disarm()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.transport.close()
            for ex in (self._current, self._parsing, *self._pending):
                if ex is not None:
                    ex.client_gone()
