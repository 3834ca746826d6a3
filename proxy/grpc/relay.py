"""Relay of one gRPC call between a client stream and an instance stream, at the HTTP/2 level.

Headers, DATA and trailers go through unchanged (protobuf is never decoded); the
gateway adds `nvcf-reqid` to the response headers, rewrites `grpc-timeout` to the
time left, and drops the caller's `authorization` and every field that names
something only the gateway may say (proxy.headers.is_protected: forwarding headers,
NVCF-* in any spelling). A reset on either side resets the other; a deadline ends both.

The call is a mode of the one forwarding engine: its slot, its connection and its one
retry on another instance are the admission path every call takes (proxy/calls/call.py,
`Routed`), its grpc-timeout is on the engine's coarse deadlines (proxy/calls/deadlines.py:
it fires at most one tick late), its target is parsed as HTTP parses it. What is here is
what only gRPC has: the stream relay, trailers, grpc-timeout, grpc-status answers.

The call is driven by callbacks, in the order the frames arrive: the HTTP/2 server
driver calls `on_data`/`on_trailers`/`on_reset`, the instance connection calls the
StreamSink methods. The only awaits are where something truly waits: the limiter's
queue (or the connection's turn under the per-connection cap) and connecting to the
instance; a call that finds a free slot and an open connection has no task at all.

Flow control is end to end, without buffering in the call: client DATA is queued in
the instance connection's engine and acknowledged to the client (WINDOW_UPDATE) only
once the engine holds little of the stream (`backlogged()` false, else on
`when_writable`); instance DATA is queued in the client connection's engine and
acknowledged to the instance only once the client takes it. So each direction holds
at most about one stream window.

The driver's seam: `GrpcHandler.open(headers, downstream, end_stream) -> call`, the
downstream being an H2Downstream (proxy/drivers/h2_stream.py); see proxy/drivers/h2.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ngh2 import ErrorCode, NeverIndexedHeader

from fngate.proxy.calls.body_rate import BodyRateGuard
from fngate.proxy.calls.call import Routed, Shared
from fngate.proxy.calls.deadlines import Deadlines
from fngate.proxy.calls.exchange import ClientGone
from fngate.proxy.calls.metrics import UNKNOWN_FUNCTION, Metrics
from fngate.proxy.calls.observation import Observers
from fngate.proxy.calls.request_ids import new_request_id, slot_owner
from fngate.proxy.errors import (
    BadRequest,
    Draining,
    NotFound,
    NotInvokable,
    ProxyError,
    RequestTimeout,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from fngate.proxy.grpc.metrics import GrpcMetrics
from fngate.proxy.grpc.protocol import (
    FramingError,
    MessageFraming,
    Status,
    error_headers,
    format_timeout,
    parse_timeout,
)
from fngate.proxy.grpc.route import authorize_call, call_target
from fngate.proxy.grpc.sessions import SESSION_HEADERS, GrpcSessions, add_session_field
from fngate.proxy.instances.h2 import H2Upstream, H2UpstreamPool, UpstreamLost
from fngate.proxy.instances.pool import ConnectFailed
from fngate.proxy.routing.lookup import KeyChecker
from fngate.proxy.routing.rate_limits import RateLimits
from fngate.proxy.routing.slots import Slots
from fngate.proxy.routing.snapshot import SnapshotHolder, VersionRoute
from fngate.proxy.wire.headers import is_protected

Headers = list[tuple[bytes, bytes]]

# pseudo-headers an instance's gRPC server reads; `:protocol` (extended CONNECT) is not gRPC
_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
# set by the gateway for each call, whatever the client sent
_OWN = frozenset({b"grpc-timeout", b"nvcf-reqid"})
_SESSION_ROUTING = frozenset({b"function-id", b"function-version-id", b":authority", b"authorization"})


class Downstream(Protocol):
    """The client side of one stream, provided by the HTTP/2 server driver (H2Downstream)."""

    @property
    def http2(self) -> bool: ...
    @property
    def conn(self) -> object: ...  # the client connection: whose per-connection slot count the call joins

    def send_headers(self, headers: Headers, end_stream: bool = False) -> None: ...  # ClientGone when gone
    def queue_data(self, data: bytes, end_stream: bool = False) -> bool: ...  # False when the stream is gone
    def backlogged(self) -> bool: ...  # the client does not take the stream's bytes now
    def when_writable(self, callback: Callable[[], None]) -> None: ...  # once it may take more (or is gone)
    def send_trailers(self, headers: Headers) -> None: ...  # ClientGone when gone
    def reset(self, error_code: int) -> None: ...
    def stop_after_answer(self) -> None: ...  # RST_STREAM NO_ERROR once the answer is out (the client may still send)
    def ack(self, n: int) -> None: ...  # flow-control credit for n bytes of request DATA


class BodyRate(Protocol):
    """The minimum request-body rate (proxy.config.GatewayConfig has these fields)."""

    @property
    def client_body_min_rate(self) -> float: ...  # bytes/s; 0: off
    @property
    def client_body_rate_window(self) -> float: ...
    @property
    def client_body_rate_grace(self) -> float: ...


def send_status(
    down: Downstream, exc: BaseException, request_id: bytes, responded: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> Status:
    """Answer a gateway error on a gRPC stream, and return its status: a trailers-only
    response before the response head, trailers after it. The one place a gateway
    error becomes gRPC bytes (proxy.errors carries each error's grpc_status); `extra`:
    fields for the trailers-only head (the gRPC port's CORS and session cookie)."""
    status, fields = error_headers(exc, request_id, responded, extra)
    try:
        if responded:
            down.send_trailers(fields)
        else:
            down.send_headers(fields, True)
    except ClientGone:
        pass
    return status


class GrpcHandler:
    """Entry point for gRPC streams: route, admit, then relay to an instance. Routing,
    the key check (`keys`: the gateway's one KeyChecker), the instance slots and the
    request metrics are the ones HTTP uses."""

    def __init__(
        self,
        holder: SnapshotHolder,
        slots: Slots,
        keys: KeyChecker,
        pool: H2UpstreamPool | None = None,
        metrics: GrpcMetrics | None = None,
        request_metrics: Metrics | None = None,
        *,
        queue_timeout: float = 60.0,
        max_message: int = 1 << 30,
        body_rate: BodyRate | None = None,
        rate_limits: RateLimits | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.holder = holder
        self.slots = slots
        self.keys = keys
        self.rate_limits = rate_limits  # the HTTP side's buckets (proxy/routing/rate_limits.py): one limit for both
        self.pool = pool or H2UpstreamPool()
        self.metrics = metrics or GrpcMetrics()
        self.request_metrics = request_metrics or Metrics()
        self._own_deadlines = deadlines is None
        # what the call's admission path (proxy/calls/call.Routed) uses: HTTP's limiter, metrics
        # and coarse deadlines (the gateway passes the engine's), with the HTTP/2 instance pool
        self.shared = Shared(holder, slots, self.pool, self.request_metrics, deadlines or Deadlines())  # type: ignore[arg-type]
        self.queue_timeout = queue_timeout  # the poll window when the call has no grpc-timeout
        self.max_message = max_message
        self.body_rate = body_rate
        self.calls: set[GrpcCall] = set()
        self.observers: Observers | None = None  # traces and the access log, when on (proxy/calls/observation.py)
        self._idle = asyncio.Event()  # set while no call is in progress
        self._idle.set()

    def open(self, headers: Headers, downstream: Downstream, end_stream: bool = False, sessions: GrpcSessions | None = None) -> GrpcCall:
        """Take a new client stream; the driver then feeds the returned call. The call
        starts from the loop, after the driver's batch of frames: a stream that batch
        also reset is over before it takes a slot or reaches an instance. `sessions`:
        the call is routed by session (the gRPC port, proxy/grpc/sessions.py)."""
        call = GrpcCall(self, headers, downstream, end_stream, sessions)
        self.calls.add(call)
        self._idle.clear()
        self.request_metrics.in_flight += 1
        call.loop.call_soon(call.start)
        return call

    def forget(self, call: GrpcCall) -> None:
        """A call ended (GrpcCall._finish)."""
        self.calls.discard(call)
        metrics = self.request_metrics
        metrics.in_flight -= 1
        if not metrics.in_flight and metrics.on_drained is not None:
            metrics.on_drained()  # the last one: a graceful stop waits for this
        if not self.calls:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` for the calls in progress to end; True when none is left."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            pass
        return not self.calls

    def abort_all(self) -> None:
        """End what is still running: UNAVAILABLE to the client, a reset to the instance."""
        for call in list(self.calls):
            call.abort(Draining("the gateway is shutting down"))

    async def aclose(self) -> None:
        """End what is still running and close the instance connections."""
        self.abort_all()
        self.pool.close()
        if self._own_deadlines:
            self.shared.deadlines.close()


class RequestProgress:
    """How far the client got with its request stream, as the minimum body rate guard
    reads it (proxy.body_rate.BodyProgress)."""

    __slots__ = ("eof", "error", "filled", "held", "received")

    def __init__(self, ended: bool) -> None:
        self.received = 0
        self.eof = ended
        self.error: BaseException | None = None
        self.filled = False
        self.held = 0  # request bytes not acknowledged to the client: the instance is the slow side

    @property
    def full(self) -> bool:
        return self.held > 0


class GrpcCall(Routed):
    """One relayed call, from its request headers to the end of both streams. Its slot,
    connection and retry are the admission path every call shares (Routed); its
    grpc-timeout is on the same coarse deadlines as HTTP's poll window."""

    __slots__ = (
        "_body_rate",
        "_conn",
        "_framing",
        "_pending",
        "_request",
        "_request_waits",
        "_resp_held",
        "_resp_waits",
        "_responded",
        "_sid",
        "_target",
        "down",
        "function_id",
        "handler",
        "headers",
        "response_extra",
        "sessions",
        "started",
        "status",
        "timeout_at",
    )

    def __init__(
        self, handler: GrpcHandler, headers: Headers, down: Downstream, end_stream: bool, sessions: GrpcSessions | None = None
    ) -> None:
        super().__init__(handler.shared, None, new_request_id(), None, slot_owner(down))
        self.handler = handler
        self.sessions = sessions
        self.response_extra: Sequence[tuple[bytes, bytes]] = ()  # fields the first response head gets (the session cookie)
        self.headers = headers
        self.down = down
        self.function_id = ""  # set once the key check and the route passed
        self.started = time.monotonic()
        self.timeout_at: float | None = None  # time.monotonic() of the client's grpc-timeout
        self.status: Status | None = None  # the call's final status, once finished
        self._request = RequestProgress(end_stream)
        self._pending: list[tuple[bytes, int, bool] | Headers] = []  # request items before the instance stream opens
        self._request_waits = False  # a when_writable of the instance stream is pending
        self._resp_held = 0  # instance DATA not yet acknowledged to the instance (the client is slow)
        self._resp_waits = False  # a when_writable of the client stream is pending
        self._conn: H2Upstream | None = None
        self._sid = 0
        self._target: tuple[bytes | None, bytes | None, bytes | None, bytes | None] = (None, None, None, None)
        self._body_rate: BodyRateGuard | None = None
        self._framing = MessageFraming(handler.max_message)
        self._responded = False  # response headers sent to the client
        obs = handler.observers
        if obs is not None:
            self.obs = obs.begin_grpc(headers, down.conn, self.request_id, self.started)

    @property
    def held_response_bytes(self) -> int:
        """Instance DATA the gateway took but the client has not (at most about a window)."""
        return self._resp_held

    # -- fed by the server driver ----------------------------------------------------------
    def on_data(self, data: bytes, flow_len: int, end_stream: bool) -> None:
        if self.closed:
            self.down.ack(flow_len)
            return
        request = self._request
        request.received += len(data)
        request.eof = end_stream
        try:
            self._framing.feed(data)
            if end_stream and not self._framing.at_boundary():
                raise FramingError("request ended inside a gRPC message")
        except FramingError:
            self.down.ack(flow_len)
            self._bad_framing()
            return
        if self._conn is None:
            self._pending.append((data, flow_len, end_stream))
        else:
            self._send_request(data, flow_len, end_stream)

    def on_trailers(self, headers: Headers) -> None:
        if self.closed:
            return
        self._request.eof = True
        if self._conn is None:
            self._pending.append(headers)
        else:
            self._conn.send_trailers(self._sid, headers)

    def on_reset(self, error_code: int) -> None:
        """The client reset the stream (or its connection went away): cancel upstream."""
        if self.closed:
            return
        self.handler.request_metrics.client_disconnects += 1
        self._upstream_reset(ErrorCode.CANCEL)
        self._finish(Status.CANCELLED, 499)

    # -- fed by the instance connection (StreamSink, through _Sink) -------------------------
    def on_response(self, headers: Headers, end_stream: bool) -> None:
        if self.closed:
            return
        self._responded = True
        if self.obs is not None:
            self.obs.head()
        try:
            self.down.send_headers([*headers, NeverIndexedHeader(b"nvcf-reqid", self.request_id), *self.response_extra], end_stream)
        except ClientGone:
            self.on_reset(ErrorCode.CANCEL)
            return
        if end_stream:  # trailers-only: the status is in these headers
            self._complete(headers)

    def on_data_up(self, data: bytes, flow_len: int, end_stream: bool) -> None:
        if self.closed:
            return
        down = self.down
        if not down.queue_data(data, end_stream):
            self.on_reset(ErrorCode.CANCEL)
            return
        if self.obs is not None:
            self.obs.bytes_out += len(data)
        if end_stream:  # DATA with END_STREAM and no trailers: not valid gRPC, but pass it on
            self._complete(())
            return
        if self._resp_held or down.backlogged():
            self._resp_held += flow_len
            if not self._resp_waits:
                self._resp_waits = True
                down.when_writable(self._response_writable)
        elif self._conn is not None:
            self._conn.ack(self._sid, flow_len)

    def on_trailers_up(self, headers: Headers) -> None:
        if self.closed:
            return
        try:
            self.down.send_trailers(headers)
        except ClientGone:
            self.on_reset(ErrorCode.CANCEL)
            return
        self._complete(headers)

    def on_reset_up(self, error_code: int) -> None:
        """The instance reset the stream: pass the reset on to the client."""
        if self.closed:
            return
        self._conn = None
        self.down.reset(error_code)
        if error_code == ErrorCode.CANCEL:
            self._finish(Status.CANCELLED, 499)
        else:
            self._finish(Status.UNAVAILABLE, 502)

    def on_lost(self, exc: Exception) -> None:
        self._conn = None
        self._fail(UpstreamUnavailable(f"instance unreachable: {exc}"))

    # -- the call --------------------------------------------------------------------------
    def start(self) -> None:
        """Route, authenticate and take a slot (Routed); the instance stream opens at once
        when a slot and a connection are free, else once they are (in a small task)."""
        if self.closed:  # reset in the batch that opened it
            return
        try:
            self.route = self._route()
        except ProxyError as err:
            if not self._stale(err):
                self._fail(err)
                return
            self.task = self.loop.create_task(self._route_fresh())  # _finish cancels it (the client left)
            return
        self._take_slot()

    def _stale(self, err: ProxyError) -> bool:
        """A refusal a newer routing table might change (read-your-writes, issue 16): an
        unknown function or key, or a version not invokable yet, when this process can
        fetch the newest table now (proxy/routing/refresh.py). Asked once per call."""
        return self.handler.holder.refresh is not None and isinstance(err, NotFound | Unauthorized | NotInvokable)

    async def _route_fresh(self) -> None:
        """Route the call again once the source fetched the newest table, as HTTP does
        (proxy/calls/fresh_routing.py), then answer as the second attempt says."""
        refresh = self.handler.holder.refresh
        assert refresh is not None  # _stale checked it
        await refresh()
        self.task = None
        if self.closed:
            return
        try:
            self.route = self._authorize(*self._target)
        except ProxyError as err:
            self._fail(err)
            return
        self._take_slot()

    async def _connect(self, host: str, port: int) -> H2Upstream:
        try:
            return await self.handler.pool.acquire(host, port)
        except UpstreamLost as exc:
            raise ConnectFailed(str(exc)) from None

    def _connect_error(self, detail: str) -> ProxyError:
        return UpstreamUnavailable(f"instance unreachable: {detail}")

    def _route(self) -> VersionRoute:
        """The target, the key check and the deadlines, from the request headers."""
        fid = vid = authority = auth = timeout = None
        for name, value in self.headers:
            if name == b"function-id":
                fid = value
            elif name == b"function-version-id":
                vid = value
            elif name == b":authority":
                authority = value
            elif name == b"authorization":
                auth = value
            elif name == b"grpc-timeout":
                timeout = value
        handler = self.handler
        poll_end = self.started + handler.queue_timeout  # the poll window, for a slot
        self.deadline = poll_end
        if timeout is not None:
            try:
                seconds = parse_timeout(timeout)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            self.timeout_at = timeout_at = time.monotonic() + seconds
            self.due_key = self.engine.deadlines.add(self.loop.time() + seconds, self)
            if timeout_at <= poll_end:
                self.deadline = None  # the call's own deadline ends the wait (on_deadline)
        self._target = (fid, vid, authority, auth)
        return self._authorize(fid, vid, authority, auth)

    def _authorize(self, fid: bytes | None, vid: bytes | None, authority: bytes | None, auth: bytes | None) -> VersionRoute:
        """The target, the key check, the session seat and the rate limit, on the held table."""
        handler = self.handler
        sessions = self.sessions
        if sessions is None:
            function_id, version_id = call_target(fid, vid, authority)
            route, grant = authorize_call(handler.holder.table, function_id, version_id, auth, handler.keys, handler.rate_limits)
            new_request = True
        else:  # the gRPC port: the session's instance, id and cookie (proxy/grpc/sessions.py)
            route, grant, seat = sessions.route(
                handler.holder.table, self._session_meta(), handler.keys, handler.rate_limits, self.down.conn, self.owner
            )
            self.engine = handler.shared.with_slots(seat)  # type: ignore[arg-type]  # a Seat answers as a Limiter does
            self.request_id, self.response_extra, new_request = seat.request_id, seat.response_headers, seat.new
            if self.obs is not None:  # the session's id names the call in its trace and access-log line
                self.obs.request_id = seat.request_id
        self.function_id = route.function_id
        if self.obs is not None:
            self.obs.routed(route, grant)
        handler.metrics.started(self.function_id, route.version_id, grant.nca_id, new_request)
        return route

    def _session_meta(self) -> dict[str, str]:
        """The routing and session fields a session's routing reads (sessions on only)."""
        meta: dict[str, str] = {}
        for name, value in self.headers:
            if name in _SESSION_ROUTING:
                meta[name.decode("latin-1")] = value.decode("latin-1")
            elif name in SESSION_HEADERS:
                add_session_field(meta, name.decode("latin-1"), value.decode("latin-1"))
        return meta

    def _watch_body_rate(self) -> None:
        """The call is about to hold a slot while its request still streams in: hold the
        client to the minimum body rate (proxy/calls/body_rate.py), as HTTP does."""
        cfg = self.handler.body_rate
        if cfg is None or cfg.client_body_min_rate <= 0:
            return
        rate = cfg.client_body_min_rate
        detail = f"the request stream arrived slower than {rate:g} bytes/s"
        self._body_rate = BodyRateGuard(
            self.loop,
            self._request,
            rate,
            cfg.client_body_rate_window,
            cfg.client_body_rate_grace,
            lambda: self._fail(RequestTimeout(detail)),
        )

    def _send(self, conn: H2Upstream) -> None:
        """Open the instance stream on `conn` and pass on what the client sent so far."""
        pending, self._pending = self._pending, []
        ended_bare = self._request.eof and not pending  # HEADERS with END_STREAM: no message at all
        self._conn = conn
        self._sid = conn.open_stream(self._instance_headers(), _Sink(self), end_stream=ended_bare)
        if not self._request.eof:  # the call holds its slot while the request still streams in
            self._watch_body_rate()
        for item in pending:
            if isinstance(item, tuple):
                self._send_request(*item)
            else:
                conn.send_trailers(self._sid, item)
            if self.closed:
                return

    def _instance_headers(self) -> Headers:
        """The client's headers minus what only the gateway may say, plus the time left
        and the request id (both unique to the call: kept out of the HPACK table)."""
        out: Headers = []
        for name, value in self.headers:  # (nghttp2 refused connection-specific fields already)
            if name[:1] == b":":
                if name in _PSEUDO:
                    out.append((name, value))
            elif name == b"te":
                if value == b"trailers":  # the one TE value HTTP/2 allows, and gRPC requires
                    out.append((name, value))
            elif name not in _OWN and not is_protected(name):
                out.append((name, value))
        if self.timeout_at is not None:
            out.append(NeverIndexedHeader(b"grpc-timeout", format_timeout(self.timeout_at - time.monotonic()).encode()))
        out.append(NeverIndexedHeader(b"nvcf-reqid", self.request_id))
        if self.obs is None:
            return out
        return self.obs.sent(out, None if self.lease is None else self.lease.endpoint)

    def _send_request(self, data: bytes, flow_len: int, end_stream: bool) -> None:
        conn = self._conn
        assert conn is not None  # called once the instance stream is open
        if (data or end_stream) and not conn.queue_data(self._sid, data, end_stream):
            self.down.ack(flow_len)  # the instance already ended or reset the stream
            return
        request = self._request
        if request.held or conn.backlogged(self._sid):
            request.held += flow_len
            request.filled = True  # the instance, not the client, sets the pace now
            if not self._request_waits:
                self._request_waits = True
                conn.when_writable(self._sid, self._request_writable)
        else:
            self.down.ack(flow_len)

    def _request_writable(self) -> None:
        self._request_waits = False
        conn = self._conn
        if self.closed or conn is None:
            return
        if conn.backlogged(self._sid):
            self._request_waits = True
            conn.when_writable(self._sid, self._request_writable)
            return
        held, self._request.held = self._request.held, 0
        self.down.ack(held)

    def _response_writable(self) -> None:
        self._resp_waits = False
        if self.closed:
            return
        down = self.down
        if down.backlogged():
            self._resp_waits = True
            down.when_writable(self._response_writable)
            return
        held, self._resp_held = self._resp_held, 0
        if self._conn is not None:
            self._conn.ack(self._sid, held)

    def _complete(self, headers: Headers | tuple[()]) -> None:
        """The instance ended its response (the call's status is in `headers`)."""
        status = Status.UNKNOWN
        for name, value in headers:
            if name == b"grpc-status":
                try:
                    status = Status(int(value))
                except ValueError:
                    pass
                break
        if not self._request.eof:
            # the instance ended the call before the client finished sending: stop both
            self._upstream_reset(ErrorCode.NO_ERROR)
            self.down.stop_after_answer()
        self._conn = None
        self._finish(status, 200)

    # -- endings ---------------------------------------------------------------------------
    def on_deadline(self) -> None:
        """The client's grpc-timeout passed (engine.deadlines)."""
        self.due_key = 0
        self._fail(UpstreamTimeout("deadline exceeded"))

    def cancel(self) -> None:
        self._finish(Status.CANCELLED, 499)

    def _bad_framing(self) -> None:
        self._upstream_reset(ErrorCode.CANCEL)
        self.down.reset(ErrorCode.PROTOCOL_ERROR)
        self._finish(Status.INTERNAL, 400)

    def abort(self, exc: BaseException) -> None:
        """End the call now with the gRPC status of `exc`."""
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:  # any error (status_of answers a bug INTERNAL)
        """End the call with a gRPC status the gateway produced."""
        if self.closed:
            return
        self._upstream_reset(ErrorCode.CANCEL)
        extra = () if self.sessions is None else self.sessions.error_headers(self.headers, exc)
        status = send_status(self.down, exc, self.request_id, self._responded, extra)
        self._responded = True
        if not self._request.eof:  # the client may still be sending: stop it once the answer is out
            self.down.stop_after_answer()
        self._finish(status, getattr(exc, "http_status", 500))

    def _upstream_reset(self, code: int) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.reset(self._sid, code)

    def _finish(self, status: Status, http_status: int) -> None:
        if self.closed:
            return
        self.closed = True
        self.status = status
        if self.due_key:
            self.engine.deadlines.remove(self.due_key, self)
        if self._body_rate is not None:
            self._body_rate.stop()
            self._body_rate = None  # its callback refers back to this call: no cycle left behind
        waiting, self.task = self.task, None
        if waiting is not None and waiting is not asyncio.current_task():
            waiting.cancel()  # the limiter gives back a slot granted in the same tick
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        # credit for request data that will never be forwarded
        unacked = self._request.held + sum(item[1] for item in self._pending if isinstance(item, tuple))
        self._request.held = 0
        self._pending = []
        if unacked:
            self.down.ack(unacked)
        handler = self.handler
        handler.forget(self)
        seconds = time.monotonic() - self.started
        handler.metrics.finished(self.function_id, status, seconds)
        handler.request_metrics.observe(self.function_id or UNKNOWN_FUNCTION, http_status, seconds)
        if self.obs is not None:
            self.obs.end_grpc(int(status), status.name, http_status, self._request.received)


class _Sink:
    """Adapts the instance connection's StreamSink calls to the call's methods."""

    __slots__ = ("on_data", "on_lost", "on_reset", "on_response", "on_trailers")

    def __init__(self, call: GrpcCall) -> None:
        self.on_response = call.on_response
        self.on_data = call.on_data_up
        self.on_trailers = call.on_trailers_up
        self.on_reset = call.on_reset_up
        self.on_lost = call.on_lost
