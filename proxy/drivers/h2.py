"""HTTP/2 server driver on libnghttp2 (ngh2; cleartext prior knowledge, or TLS with ALPN h2).

Bytes in -> ngh2 events -> the same Exchange as HTTP/1.1 (the seam of proxy/calls/exchange.py),
handed to the RequestHandler the driver was made with. The engine
and its protections (frame size, reset and glitch budgets, control-frame floods,
CONTINUATION and header-list limits) are configured in proxy/wire/h2_engine.py; a
malformed request never becomes an event (nghttp2 resets its stream).

One batch of bytes is handled in three steps: feed it to the engine and write what the
engine answers (SETTINGS and PING acknowledgements, GOAWAY); dispatch its events;
then start the requests the batch opened, except those the same batch already reset
(a rapid-reset client sends HEADERS and RST_STREAM together: such a request never
reaches the handler, the limiter's queue or an instance). A request line an HTTP/1.1
instance could not take as it is (a :path that is not origin-form, an :authority that
is not a host) is answered 400 on its stream, as HTTP/1.1 answers it.

Flow control is end to end. Request DATA is acknowledged (WINDOW_UPDATE) only once
the call passed it on. Response DATA is queued in the engine, which frames it as
the client's windows allow; a sender waits (`send_data`, `when_writable`) while more
than QUEUE_HIGH bytes of its stream wait there. While the socket's buffer is over its
high-water mark nothing more is taken from the engine, so a client that never reads
piles up only what its windows admit, and its unanswered PINGs and SETTINGS count
against nghttp2's outbound-ack limit (then GOAWAY and close).

The gRPC seam. A request whose content-type starts with `application/grpc` does not
become an Exchange: it is handed to the gateway's gRPC handler
(`proxy.grpc_relay.GrpcHandler`), which provides
    open(headers, downstream, end_stream) -> call
with `call.on_data(data, flow_len, end_stream)`, `call.on_trailers(headers)` and
`call.on_reset(error_code)`. The `downstream` is an H2Downstream (proxy/drivers/h2_stream.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import ngh2
from ngh2 import ErrorCode, NeverIndexedHeader
from ngh2 import events as ev

from fngate.proxy.calls.exchange import ClientGone, OpenConnections, RequestHandler
from fngate.proxy.calls.request_ids import new_request_id
from fngate.proxy.drivers.h2_request import Malformed, read_request
from fngate.proxy.drivers.h2_stream import STATUS_VALUES, H2Downstream, H2Exchange
from fngate.proxy.errors import BadRequest, HeadersTooLarge, ProxyError, error_fields
from fngate.proxy.grpc.protocol import error_headers
from fngate.proxy.wire.h2_engine import fatal_code, goaway_frame, server_connection, server_settings
from fngate.proxy.wire.headers import check_target, valid_host
from fngate.proxy.wire.stream_flow import GONE as _GONE
from fngate.proxy.wire.stream_flow import QUEUE_HIGH as QUEUE_HIGH
from fngate.proxy.wire.stream_flow import StreamFlow

if TYPE_CHECKING:
    from fngate.proxy.config import GatewayConfig

_WINDOW = 1 << 20  # per-stream receive window we advertise

Header = tuple[bytes, bytes] | ngh2.NeverIndexedHeader

# the event types _dispatch tells apart, bound here: a module attribute lookup per event otherwise
_REQUEST_RECEIVED = ev.RequestReceived
_DATA_RECEIVED = ev.DataReceived
_STREAM_CLOSED = ev.StreamClosed
_TRAILERS_RECEIVED = ev.TrailersReceived
_CONNECTION_CLOSED = ev.ConnectionClosed
_CANCEL = ErrorCode.CANCEL
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}  # decoded once


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class H2Server:
    """An asyncio protocol (not derived from asyncio.Protocol, so that compiled it is an
    extension type: h2.pxd; asyncio only calls its methods)."""

    __slots__ = (
        "__weakref__",  # tests check a closed connection is freed
        "_flush_pending",
        "_good_authority",
        "_idle",
        "_idle_since",
        "_loop",
        "_stall",
        "_stall_seen",
        "_starts",
        "_stop_after_answer",
        "client_addr",
        "closed",
        "config",
        "connections",
        "draining",
        "flow",
        "grpc",
        "h2",
        "handler",
        "out",
        "scheme",
        "streams",
        "transport",
    )

    def __init__(self, config: GatewayConfig, handler: RequestHandler, connections: OpenConnections, grpc: Any = None) -> None:
        self.config = config
        self.handler = handler
        self.connections = connections
        self.grpc = grpc
        self.transport: asyncio.Transport | None = None
        self.h2 = server_connection(config.max_header_bytes)
        self.client_addr = ""
        self.scheme = b"http"
        self.draining = False
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.streams: dict[int, Any] = {}  # stream id -> H2Exchange or gRPC call
        self._starts: list[H2Exchange] = []  # requests this batch opened, started once it is dispatched
        self.out = StreamFlow(self.h2, None, soon=False)  # response bytes queued per stream, and their senders
        self.flow = self.out.flow  # paused: the transport's buffer is over its high-water mark
        self._stop_after_answer: list[int] = []  # streams answered early, reset once the answer is out
        self._flush_pending = False
        self._good_authority = b""  # the last :authority found valid
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._stall: asyncio.TimerHandle | None = None  # armed while response bytes wait for the client
        self._stall_seen: dict[int, tuple[int, float]] = {}  # stream id -> (bytes waiting, unchanged since)

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = self.out.loop = asyncio.get_running_loop()
        self.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client_addr = peer[0] if peer else ""
        if transport.get_extra_info("ssl_object") is not None:
            self.scheme = b"https"
        cfg = self.config
        self.h2.initiate_connection(server_settings(cfg.h2_max_concurrent_streams, _WINDOW, cfg.max_header_bytes))
        self.h2.set_local_window_size(_WINDOW * 4)
        self._flush()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        h2 = self.h2
        try:
            h2.receive_data(data)
        except Exception as exc:
            self._fatal(exc)
            return
        events = h2.events()
        self._flush()  # acknowledgements first, and the GOAWAY if the batch earned one
        self._dispatch(events)
        starts = self._starts
        if starts:
            self._starts = []
            streams = self.streams
            for ex in starts:
                if not self.closed and streams.get(ex.sid) is ex:  # else reset by the batch that opened it
                    self.handler.start(ex)
        self._flush()

    def eof_received(self) -> bool | None:
        """The client half-closed: None lets the transport close, as asyncio.Protocol's
        default did (an asyncio protocol by its methods: this one must be spelled out)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._starts = []
        self.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        streams, self.streams = self.streams, {}
        for s in streams.values():
            self._gone(s, ErrorCode.CANCEL)
        self.out.wake_all()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.paused = False
        self._flush()  # what the engine held back, before the waiting senders add more
        self.flow.resume_writing()

    # -- events -------------------------------------------------------------------------
    def _dispatch(self, events: Sequence[ev.Event]) -> None:
        for e in events:
            t = type(e)
            if t is _REQUEST_RECEIVED:
                self._on_request(e)  # type: ignore[arg-type]
            elif t is _DATA_RECEIVED:
                self._on_data(e)  # type: ignore[arg-type]
            elif t is _STREAM_CLOSED:
                self._on_closed(e.stream_id, e.error_code)  # type: ignore[attr-defined]
            elif t is _TRAILERS_RECEIVED:
                self._on_trailers(e)  # type: ignore[arg-type]
            elif t is _CONNECTION_CLOSED:
                self._starts = []  # GOAWAY is out: nothing the batch opened is started
                self.close()

    def _on_request(self, e: ev.RequestReceived) -> None:
        sid = e.stream_id
        ended = e.end_stream
        try:
            method, target, authority, grpc, headers, size = read_request(e.headers)
        except Malformed:
            self.reset(sid, ErrorCode.PROTOCOL_ERROR)
            return
        if size > self.config.max_header_bytes:
            self._refuse(sid, grpc, ended, HeadersTooLarge(f"Request headers exceed {self.config.max_header_bytes} bytes"))
            return
        verb = _METHODS.get(method) or method.decode("ascii", "replace")
        try:
            check_target(verb, target)
            if authority != self._good_authority:  # a client repeats its authority: checked once
                if not valid_host(authority):
                    raise BadRequest("invalid :authority")
                self._good_authority = authority
        except BadRequest as err:
            self._refuse(sid, grpc, ended, err)
            return
        if grpc and self.grpc is not None:
            # the call's task starts after this batch: a reset in the batch cancels it first
            self.streams[sid] = self.grpc.open(list(e.headers), H2Downstream(self, sid), ended)
            return
        ex = H2Exchange(self, sid, verb, target, headers, authority, ended)
        self.streams[sid] = ex
        self._starts.append(ex)

    def _refuse(self, sid: int, grpc: bool, ended: bool, err: ProxyError) -> None:
        """Answer one stream the driver cannot hand on (headers over the advertised
        limit: 431; a request line an HTTP/1.1 instance cannot take: 400), or for gRPC a
        trailers-only status; the connection's other streams go on."""
        h2 = self.h2
        request_id = new_request_id()  # the answer is built by the error root every answer shares
        body = b""
        try:
            if grpc:
                status, trailers = error_headers(err, request_id, False)
                h2.send_response(sid, trailers, end_stream=True)
            else:
                fields, body = error_fields(err, request_id)
                head: list[Header] = [(b":status", STATUS_VALUES[err.http_status])]
                for name, value in fields:
                    head.append(NeverIndexedHeader(name, value) if name == b"nvcf-reqid" else (name, value))
                h2.send_response(sid, head, end_stream=not body)
                if body:
                    h2.send_data(sid, body, end_stream=True)
        except _GONE:
            return
        observers = getattr(self.handler, "observers", None)  # the access log's line (proxy/calls/observation.py)
        if observers is not None:
            now = time.monotonic()
            if grpc:
                observers.answered(
                    "grpc", request_id, now, self.client_addr, int(status), 0, 0, http_status=err.http_status, grpc_code=status.name
                )
            else:
                observers.answered("h2", request_id, now, self.client_addr, err.http_status, 0, len(body))
        if not ended:  # the client may still be sending: stop it once the answer is out (RFC 9113 8.1)
            self._stop_after_answer.append(sid)

    def _on_data(self, e: ev.DataReceived) -> None:
        sid = e.stream_id
        s = self.streams.get(sid)
        data = e.data
        if isinstance(s, H2Exchange):
            if data:
                s.body.feed(data)
            if e.end_stream:
                s.body.feed_eof()
        elif s is not None:
            s.on_data(data, len(data), e.end_stream)
        elif data:
            self.ack(sid, len(data))

    def _on_trailers(self, e: ev.TrailersReceived) -> None:
        s = self.streams.get(e.stream_id)
        if isinstance(s, H2Exchange):
            s.body.feed_eof()  # request trailers are not forwarded to HTTP/1.1 instances
        elif s is not None:
            s.on_trailers(list(e.headers))

    def _on_closed(self, sid: int, code: int) -> None:
        s = self.streams.pop(sid, None)
        self.out.wake(sid)
        if s is not None:
            self._gone(s, code or _CANCEL)
            self._stream_done()

    def _gone(self, s: Any, code: int) -> None:
        if isinstance(s, H2Exchange):
            unread = s.body.size
            s.client_gone()
            if unread:  # credit for request bytes nobody will read
                self.ack(s.sid, unread)
        else:
            s.on_reset(code)

    def _fatal(self, exc: Exception) -> None:
        """The engine gave up on the connection (a flood, a limit): ngh2 can no longer
        serialise anything, so the GOAWAY is written by hand, then the connection closes."""
        self.closed = True
        self._starts = []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(goaway_frame(fatal_code(exc)))
            transport.close()

    # -- used by exchanges and the gRPC relay ---------------------------------------------
    def send_headers(self, sid: int, headers: Sequence[Header], end_stream: bool) -> None:
        if self.closed:
            raise ClientGone()
        try:
            self.h2.send_response(sid, headers, end_stream=end_stream)
        except _GONE:
            raise ClientGone() from None
        self.flush_soon()

    def send_trailers(self, sid: int, headers: Sequence[Header]) -> None:
        if self.closed:
            raise ClientGone()
        try:
            self.h2.send_trailers(sid, headers)
        except _GONE:
            raise ClientGone() from None
        self.flush_soon()

    def queue_data(self, sid: int, data: bytes, end_stream: bool) -> bool:
        """Queue body bytes in the engine (framed as the windows allow); False when the
        stream is gone. True does not mean the client can take more: see `backlogged`."""
        if self.closed or not self.out.queue(sid, data, end_stream):
            return False
        self.flush_soon()
        return True

    def backlogged(self, sid: int) -> bool:
        """The client is not taking this stream's bytes (windows closed or socket full)."""
        return self.out.backlogged(sid)

    def when_writable(self, sid: int, callback: Callable[[], None]) -> None:
        """Call `callback` once the stream may take more (or is gone)."""
        if self.closed:
            callback()
        else:
            self.out.when_writable(sid, callback)

    async def send_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        if not self.queue_data(sid, data, end_stream):
            raise ClientGone()
        while self.backlogged(sid):
            waiter: asyncio.Future[None] = self._loop.create_future()  # type: ignore[union-attr]
            self.when_writable(sid, partial(_wake_future, waiter))
            await waiter
            if self.closed:
                raise ClientGone()

    def end_stream(self, sid: int) -> None:
        self.queue_data(sid, b"", True)

    def reset(self, sid: int, code: int) -> None:
        s = self.streams.pop(sid, None)
        if s is not None:
            self._stream_done()
        self.out.wake(sid)
        if self.closed:
            return
        try:
            self.h2.reset_stream(sid, code)
        except _GONE:
            return
        self.flush_soon()

    def ack(self, sid: int, n: int) -> None:
        if n <= 0 or self.closed:
            return
        try:
            self.h2.acknowledge_received_data(n, sid)
        except _GONE:
            return
        self.flush_soon()

    # -- housekeeping ---------------------------------------------------------------------
    def _stream_done(self) -> None:
        if self.draining and not self.streams:
            self._idle_close()
        else:
            self._arm_idle()

    def shutdown(self) -> None:
        """Graceful stop: streams in progress finish, then GOAWAY and close. (The GOAWAY
        waits for them: httpx fails every open stream on any GOAWAY, even a notice.)"""
        self.draining = True
        if not self.streams:
            self._idle_close()

    def _arm_idle(self) -> None:
        """The connection has no stream from now on: close it after keepalive_timeout.
        One timer per idle spell, not one per stream: the timer checks when it fires."""
        if self.streams or self.closed or self._loop is None:
            return
        self._idle_since = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_at(self._idle_since + self.config.keepalive_timeout, self._idle_due)

    def _idle_due(self) -> None:
        self._idle = None
        if self.streams or self.closed:
            return  # busy again: the last stream to end arms a new timer
        due = self._idle_since + self.config.keepalive_timeout
        if self._loop.time() < due:  # type: ignore[union-attr]
            self._idle = self._loop.call_at(due, self._idle_due)  # type: ignore[union-attr]
        else:
            self._idle_close()

    def _idle_close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if not self.streams and not self.closed:
            try:
                self.h2.send_goaway(ErrorCode.NO_ERROR)
            except _GONE:
                pass
            self.flow.paused = False
            self._flush()
            self.close()

    def _flush(self) -> None:
        self._flush_pending = False
        if self.closed or self.flow.paused:
            return  # resume_writing flushes
        h2 = self.h2
        answered, self._stop_after_answer = self._stop_after_answer, []
        try:
            data = h2.data_to_send()
        except _GONE:
            self.close()
            return
        if data:
            self.transport.write(data)  # type: ignore[union-attr]
        events = h2.events()
        if events:
            self._dispatch(events)
        if self.out.waiting:
            self.out.wake_ready()
        if self._stall is None and h2.queued_body_size():
            self._arm_stall()
        if answered:
            self._stop_answered(answered)

    def _arm_stall(self) -> None:
        self._stall = self._loop.call_later(self.config.client_body_idle_timeout / 2, self._stall_check)  # type: ignore[union-attr]

    def _stall_check(self) -> None:
        """A stream whose waiting response bytes did not move for client_body_idle_timeout
        (the client keeps its window shut, or reads nothing) is reset, and its instance
        slot freed: a client cannot hold slots by not reading. Checked every half period,
        so a stall is cut after one to one and a half periods."""
        self._stall = None
        if self.closed:
            return
        h2 = self.h2
        now = self._loop.time()  # type: ignore[union-attr]
        limit = self.config.client_body_idle_timeout
        seen: dict[int, tuple[int, float]] = {}
        for sid, s in list(self.streams.items()):
            waiting = h2.queued_body_size(sid)
            if not waiting:
                continue
            before = self._stall_seen.get(sid)
            since = before[1] if before is not None and before[0] == waiting else now
            if now - since < limit:
                seen[sid] = (waiting, since)
                continue
            del self.streams[sid]
            self.out.wake(sid)
            self._gone(s, ErrorCode.CANCEL)
            try:
                h2.reset_stream(sid, ErrorCode.CANCEL)
            except _GONE:
                pass
        self._stall_seen = seen
        if seen:
            self._arm_stall()
        if not self.streams:
            self._stream_done()
        self.flush_soon()

    def _stop_answered(self, answered: list[int]) -> None:
        """RST_STREAM NO_ERROR to streams answered before their request ended, once the
        answer is framed (a reset queued earlier would overtake it)."""
        h2 = self.h2
        waiting = self._stop_after_answer
        for sid in answered:
            if h2.queued_body_size(sid):
                waiting.append(sid)
                continue
            try:
                h2.reset_stream(sid, ErrorCode.NO_ERROR)
            except _GONE:
                continue
            self.flush_soon()

    def flush_soon(self) -> None:
        """Frames produced outside data_received (by exchanges and the relay) go out once per
        loop iteration: a response's HEADERS and DATA, and many streams' frames, in one write."""
        if not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
