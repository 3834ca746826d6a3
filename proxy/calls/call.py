"""The forwarding engine: one Call per request, from the client's exchange to an
HTTP/1.1 instance and back, driven by callbacks. Read this file to follow any request.

    handler (dispatch.py) -> Call.run -> slot (limiter) -> connection (pool) -> _send
        -> the instance's response pushed to on_head / on_body / on_end, one flush per
           batch of socket bytes -> the client's exchange -> _finish

The common case (a complete request, a free slot, an idle pooled connection) runs
from `run` to `_finish` without a coroutine, a future or a task: one socket write to
the instance, one to the client. Only a real wait takes a small task (`_obtain`):
a place in the limiter's queue (busy instances, cold start) or a TCP connect.

What can happen to a call, and where:
- queueing, cold start, connect: `_obtain` (then `_send`);
- a stale pooled connection or an instance that failed before answering: one retry
  on another instance (`_retry`, a state change of this call) while the request body
  is still at hand; a connect failure likewise;
- a request body that streams in (`on_request_data` / `on_request_end`): written to
  the instance as it comes, acknowledged to the client's driver (which then reads
  more) only once the instance's socket takes it; held to a minimum rate
  (proxy/calls/body_rate.py) while it holds the slot;
- the response: passed on as it arrives (SSE events are never held); a client that
  takes nothing pauses reading from the instance until it drains (`flush`);
- the head deadline (NVCF-POLL-SECONDS + grace: 504) and, once the head is in, the
  idle timeout (no byte either way for `idle_timeout`), both on the coarse
  deadlines of proxy/calls/deadlines.py (`on_deadline`);
- SSE keep-alive comments while a streaming request waits (`_keepalive`), the head
  of which makes the gateway's errors `event: error` afterwards;
- the client going away at any stage (`client_gone`), errors (`_fail`).

Every gateway error becomes the client's answer in one place: `answer_error` (its fields
from proxy/errors.error_fields, which the drivers' refusals use too).

gRPC is a mode of the same engine: `Routed` below is the one admission path (slot,
queue, connect, one retry elsewhere) for an HTTP Call and for a gRPC call
(proxy/grpc/relay.py, which adds only what is gRPC's: the stream relay to an HTTP/2
instance, trailers, grpc-timeout on the same coarse deadlines, grpc-status answers).
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import get_running_loop
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from fngate.proxy.calls.body_rate import BodyRateGuard
from fngate.proxy.calls.deadlines import Deadlines
from fngate.proxy.calls.metrics import UNKNOWN_FUNCTION
from fngate.proxy.calls.nvcf_metrics import TLB
from fngate.proxy.calls.request_ids import slot_owner
from fngate.proxy.calls.sse import COMMENT, error_event, sse_head, wants_sse
from fngate.proxy.errors import InternalError, PollTimeout, ProxyError, RequestTimeout, UpstreamUnavailable, error_fields, status_for_nvcf
from fngate.proxy.instances.pool import ConnectFailed
from fngate.proxy.routing.lookup import KeyChecker, poll_seconds, resolve
from fngate.proxy.routing.rate_limits import RateLimits
from fngate.proxy.wire.headers import RouteHeaders, call_head, client_head_block

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from fngate.proxy.calls.exchange import Exchange
    from fngate.proxy.calls.metrics import Metrics
    from fngate.proxy.calls.observation import CallRecord, Observers
    from fngate.proxy.config import GatewayConfig
    from fngate.proxy.instances.h1 import H1Upstream
    from fngate.proxy.instances.pool import H1Pool
    from fngate.proxy.routing.limiter import Lease, Limiter
    from fngate.proxy.routing.snapshot import KeyGrant, SnapshotHolder, VersionRoute

_TIMEOUT_DETAIL = "the instance sent no response headers within the poll window"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # framed with content-length: 0 even when empty
_CHUNKED = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
# nvcf-status by response status, from the one rule (errors.status_for_nvcf, an interpreted call otherwise)
_NVCF_STATUS = tuple(status_for_nvcf(s) for s in range(600))


class Shared:
    """What every call to an instance shares, whatever its protocol (an HTTP Call here, a
    gRPC call in proxy/grpc/relay.py): the routing snapshot, the limiter, the instance
    pool of the call's protocol, the request metrics and the coarse deadlines."""

    __slots__ = ("deadlines", "holder", "limiter", "metrics", "pool")

    def __init__(self, holder: SnapshotHolder, limiter: Limiter, pool: InstancePool, metrics: Metrics, deadlines: Deadlines) -> None:
        self.holder = holder
        self.limiter = limiter
        self.pool = pool
        self.metrics = metrics
        self.deadlines = deadlines

    def with_slots(self, limiter: Limiter) -> Shared:
        """The same parts with slots from elsewhere (a gRPC session's seat holds its own)."""
        return Shared(self.holder, limiter, self.pool, self.metrics, self.deadlines)


class Engine(Shared):
    """The HTTP side's Shared, plus configuration, the key check, rate limits and cached
    header bytes (gRPC uses the same key check, rate limits and deadlines)."""

    __slots__ = (
        "config",
        "header_grace",
        "idle_timeout",
        "keys",
        "observers",
        "poll_default",
        "rate_limits",
        "route_headers",
        "sse_keepalive",
    )

    pool: H1Pool

    def __init__(self, config: GatewayConfig, holder: SnapshotHolder, limiter: Limiter, pool: H1Pool, metrics: Metrics) -> None:
        super().__init__(holder, limiter, pool, metrics, Deadlines())
        self.config = config
        # what every call reads of the (frozen) configuration, kept as C numbers
        self.header_grace = config.header_grace
        self.idle_timeout = config.idle_timeout
        self.sse_keepalive = config.sse_queue_keepalive
        self.poll_default = poll_seconds(None, config.default_poll_seconds)  # the poll window without NVCF-POLL-SECONDS
        self.keys = KeyChecker()
        self.rate_limits = RateLimits(metrics.rate_limited)
        self.route_headers = RouteHeaders(config.region, config.asset_dir, config.output_dir)
        self.observers: Observers | None = None  # traces and the access log, when on (proxy/calls/observation.py)

    def authorize(
        self, fid: str, vid: str | None, auth: bytes | None, poll_h: bytes | None, started: float, default_poll: int | None = None
    ) -> tuple[VersionRoute, KeyGrant, float]:
        """(route, grant, head deadline) against the current snapshot, in NVCF's order:
        key, version, poll window, then the function's rate limit. Raises ProxyError."""
        table = self.holder.table
        grant = self.keys.check(table, auth, fid, vid)
        route = resolve(table, fid, vid, grant)
        if poll_h is None and default_poll is None:
            poll = self.poll_default  # (the common case, without a call)
        else:
            poll = poll_seconds(poll_h, self.config.default_poll_seconds if default_poll is None else default_poll)
        self.metrics.nvcf.invocation(route.function_id, route.version_id, grant.nca_id)
        if route.rate_limit:
            self.rate_limits.check(route, grant)
        return route, grant, started + poll + self.header_grace

    def close(self) -> None:
        self.deadlines.close()


def answer_error(ex: Exchange, err: ProxyError, request_id: bytes, sse_started: bool = False) -> int:
    """The one place a gateway error becomes the client's answer: problem+json (or the
    error's own body) while no response head went out; once one did, the exchange is
    aborted (the client must see the answer is incomplete), except after the gateway's
    own SSE keep-alive 200, where it arrives as one `event: error`. Returns the body
    bytes sent (the access log's bytes_out)."""
    if sse_started and not ex.finished:
        event = error_event(err.http_status, err.detail or type(err).__name__)
        ex.send(event)
        ex.end()
        return len(event)
    if ex.response_started or ex.finished:
        ex.abort()
        return 0
    headers, body = error_fields(err, request_id)
    ex.start_response(err.http_status, headers)
    if body:
        ex.send(body)
    ex.end()
    return len(body)


class InstancePool(Protocol):
    """An instance pool as the admission path sees it: H1Pool, or the gRPC side's HTTP/2 pool."""

    def take_idle(self, host: str, port: int) -> Any: ...  # an open connection with room, or None


class Routed:
    """A call to one of a function version's instances, whatever the protocol: the one
    admission path (a slot now, or in the limiter's queue; a connection now, or a
    connect; one retry on another instance when the first cannot be reached). The
    protocol's side says how a connection is made (`_connect`), how the request goes
    out on it (`_send`) and how a failure is answered (`_fail`)."""

    __slots__ = (
        "closed",
        "deadline",
        "due_key",
        "engine",
        "exclude",
        "lease",
        "loop",
        "obs",
        "owner",
        "pin",
        "request_id",
        "retried",
        "route",
        "task",
    )

    engine: Shared

    def __init__(self, engine: Shared, route: VersionRoute | None, request_id: bytes, deadline: float | None, owner: object) -> None:
        self.engine = engine
        self.route = route
        self.request_id = request_id
        self.deadline = deadline  # time.monotonic() by which a slot must be granted (None: no limit)
        self.owner = owner  # whose per-connection slot count the call joins (request_ids.slot_owner)
        self.loop = get_running_loop()
        self.lease: Lease | None = None
        self.task: asyncio.Task[None] | None = None  # only while waiting for a slot or a connection
        self.exclude: str | None = None  # the instance a retry avoids
        self.pin: str | None = None  # the only instance a queued request waits for (LLM sticky sessions)
        self.due_key = 0  # the call's key in engine.deadlines, 0 while it has none
        self.retried = False
        self.closed = False
        self.obs: CallRecord | None = None  # set only while tracing or the access log is on

    def _take_slot(self) -> None:
        """A free slot and an idle connection now, or wait for them in `_obtain`."""
        route = self.route
        assert route is not None  # a routed call
        engine = self.engine
        lease = engine.limiter.try_acquire(route, self.exclude, self.owner)
        if lease is None:
            self.task = self.loop.create_task(self._obtain(True))
            return
        self.lease = lease
        ep = lease.endpoint
        conn = engine.pool.take_idle(ep.host, ep.port)
        if conn is None:
            self.task = self.loop.create_task(self._obtain(False))
        else:
            self._send(conn)

    def _address(self) -> tuple[str, int]:
        lease = self.lease
        assert lease is not None  # a slot is held from here on
        ep = lease.endpoint
        return ep.host, ep.port

    async def _obtain(self, admit: bool) -> None:
        """The only waits: a place in the limiter's queue, a connect. A client that goes
        away (or a deadline) cancels this task; the limiter gives back a slot granted in
        the same loop tick."""
        engine = self.engine
        try:
            if admit:
                assert self.route is not None  # routed calls only admit
                self.lease = await engine.limiter.admit(
                    self.route, self.deadline, self.request_id.decode(), self.exclude, owner=self.owner, pin=self.pin
                )
            if self.obs is not None:
                self.obs.slot()
            conn = await self._connect(*self._address())
        except ProxyError as err:
            self.task = None
            self._fail(err)
            return
        except ConnectFailed as exc:
            self.task = None
            engine.metrics.upstream_error("connect")
            if self.retried:
                self._fail(self._connect_error(str(exc)))
            else:
                self._retry()
            return
        except asyncio.CancelledError:
            self.task = None
            if not self.closed:  # the loop stops under a waiting call
                self.cancel()
            raise
        except Exception as exc:  # a defect: answer it rather than leave the client waiting
            self.task = None
            log.debug("call %s failed in admission: %r", self.request_id, exc)
            self._fail(InternalError("the gateway failed to route the request"))
            return
        self.task = None
        if not self.closed:
            self._send(conn)

    def _retry(self) -> None:
        """The instance failed before answering: once more, elsewhere if there is another."""
        engine = self.engine
        engine.metrics.retries += 1
        self.retried = True
        failed = self.lease
        assert failed is not None and self.route is not None  # a routed call held a slot
        self.lease = None
        failed.release()
        self.exclude = failed.endpoint.id
        try:
            self.route = resolve(engine.holder.table, self.route.function_id, self.route.version_id)  # the instances now
        except ProxyError as err:
            self._fail(err)
            return
        self._take_slot()

    # -- what the protocol's side provides ---------------------------------------------------
    async def _connect(self, host: str, port: int) -> Any:
        """A new connection to the instance; ConnectFailed when it cannot be reached."""
        raise NotImplementedError

    def _send(self, conn: Any) -> None:
        raise NotImplementedError

    def _connect_error(self, detail: str) -> ProxyError:
        return UpstreamUnavailable(detail)

    def _fail(self, err: ProxyError) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop this call without answering (its owner answers, or nobody waits)."""
        raise NotImplementedError


class Call(Routed):
    """One request to an instance (see the module docstring). `tracked`: it counts in the
    gateway's metrics (a pexec job that runs on after its 202 does not)."""

    __slots__ = (
        "chunked",
        "conn",
        "due_at",
        "ended",
        "endpoint",
        "ex",
        "grant",
        "host_routed",
        "ka_started",
        "ka_timer",
        "last",
        "rate_guard",
        "sent",
        "sse",
        "started",
        "status",
        "streamed",
        "streaming",
        "target",
        "tracked",
        "unacked",
    )

    engine: Engine
    deadline: float

    def __init__(
        self,
        engine: Engine,
        ex: Exchange,
        route: VersionRoute | None,
        grant: KeyGrant | None,
        request_id: bytes,
        started: float,
        deadline: float,
        target: bytes | None = None,
        host_routed: bool = True,
        tracked: bool = True,
        endpoint: str = TLB,
    ) -> None:
        # Routed's fields, set here rather than through super().__init__: one call less per request
        self.engine = engine
        self.route = route
        self.request_id = request_id
        self.deadline = deadline  # time.monotonic() by which the response head must be in (and a slot granted)
        self.owner = slot_owner(ex)
        self.loop = get_running_loop()  # (module names bound at import: no module attribute lookup per request)
        self.lease = None
        self.task = None
        self.exclude = None
        self.pin = None
        self.due_key = 0
        self.retried = False
        self.closed = False
        self.obs: CallRecord | None = None  # set only while tracing or the access log is on (run)
        self.ex = ex
        self.grant = grant
        self.started = started
        self.target = ex.target if target is None else target
        self.host_routed = host_routed
        self.tracked = tracked
        self.endpoint = endpoint  # NVCF's route label (proxy/calls/nvcf_metrics.py)
        self.conn: H1Upstream | None = None
        self.rate_guard: BodyRateGuard | None = None
        self.ka_timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.due_at = 0.0
        self.last = 0.0  # loop time of the last byte moved, once streaming
        self.unacked = 0  # request body bytes written to the instance, not yet acknowledged
        self.sent = False  # an instance has the request
        self.streamed = False  # the request body streams (no retry once it started)
        self.chunked = False  # ... re-framed as chunked
        self.streaming = False  # the response head arrived: the idle timeout applies
        self.sse = False
        self.ended = False  # the instance's response is complete
        self.ka_started = False  # the gateway's own SSE keep-alive 200 went out

    # -- start: a slot, a connection (Routed), then _send ---------------------------------
    def run(self) -> None:
        engine = self.engine
        ex = self.ex
        if self.tracked:
            engine.metrics.in_flight += 1
            if engine.observers is not None:
                self.obs = engine.observers.begin_call(ex, self.route, self.grant, self.request_id, self.started)
        ex.on_disconnect = self.client_gone
        loop = self.loop
        self.due_at = due = loop.time() + max(self.deadline - self.started, 0)
        self.due_key = engine.deadlines.add(due, self)
        interval = engine.sse_keepalive
        if interval > 0 and wants_sse(ex):
            self.ka_timer = loop.call_later(interval, self._keepalive)
        self._take_slot()

    async def _connect(self, host: str, port: int) -> H1Upstream:
        conn, _ = await self.engine.pool.acquire(host, port)
        return conn

    # -- the request ---------------------------------------------------------------------
    def _request_head(self, body_line: bytes | None) -> bytes:
        ex = self.ex
        route, grant, lease = self.route, self.grant, self.lease
        assert route is not None and grant is not None and lease is not None  # a routed call with a slot
        engine = self.engine
        poll_left = round(self.deadline - engine.header_grace - monotonic())
        if poll_left < 1:  # (not max(): a builtin call per request)
            poll_left = 1
        return call_head(
            ex.method,
            self.target,
            ex.headers if self.obs is None else self.obs.sent(ex.headers, lease.endpoint),
            engine.route_headers.for_call(engine.holder.table, route, lease.endpoint, grant, self.host_routed, ex.http2),
            request_id=self.request_id,
            poll_left=poll_left,
            body=body_line,
            client_addr=ex.client_addr,
            authority=ex.authority,
            scheme=ex.scheme,
        )

    def _send(self, conn: H1Upstream) -> None:
        """Write the request: at once when its body is complete (kept for a retry), else
        the head, then the body as it streams in."""
        self.conn = conn
        self.sent = True
        ex = self.ex
        body = ex.body
        if body.eof and not ex.expect_continue:
            data = body.take_whole()
            line = b"content-length: %d\r\n" % len(data) if data or ex.method in _BODY_METHODS else None
            head = self._request_head(line)
            conn.start(head + data if data else head, ex.method == "HEAD", self)
            return
        length = None
        for n, v in ex.headers:
            if n == b"content-length":
                length = v
        self.streamed = True
        self.chunked = length is None
        conn.start(self._request_head(_CHUNKED if length is None else b"content-length: %s\r\n" % length), ex.method == "HEAD", self)
        if self.conn is conn:  # (an instance that closed at once was handled by now)
            self._guard_body_rate()
            ex.read_body(self)

    def on_request_data(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self.closed:
            return
        conn.send_body(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        if self.unacked or conn.backlogged():  # the instance takes no more for now: the client waits too
            if not self.unacked:
                conn.when_writable(self._instance_writable)
            self.unacked += len(data)
        else:
            self.ex.body.consumed(len(data))

    def _instance_writable(self) -> None:
        n, self.unacked = self.unacked, 0
        if not self.closed:
            self.ex.body.consumed(n)

    def on_request_end(self) -> None:
        if self.rate_guard is not None:
            self.rate_guard.stop()
            self.rate_guard = None
        conn = self.conn
        if self.chunked and conn is not None and not self.closed:
            conn.send_body(_LAST_CHUNK)
        self.chunked = False

    def on_request_gone(self) -> None:
        """The client went away mid-body: the request can never be complete."""
        if self.closed:
            return
        if self.tracked:
            self.engine.metrics.client_disconnects += 1
            self._app_error(499)
        self._finish(499)
        # heard only by a client side that outlives its client (pexec's ResultCollector)
        answer_error(self.ex, UpstreamUnavailable("the client went away before its request body arrived"), self.request_id)

    def _guard_body_rate(self) -> None:
        """The request holds a slot while its body streams in: hold the client to the
        minimum body rate."""
        cfg = self.engine.config
        rate = cfg.client_body_min_rate
        if rate > 0 and self.rate_guard is None and not self.ex.body.eof:
            self.rate_guard = BodyRateGuard(
                self.loop, self.ex.body, rate, cfg.client_body_rate_window, cfg.client_body_rate_grace, self._body_too_slow
            )

    def _body_too_slow(self) -> None:
        self.rate_guard = None
        rate = self.engine.config.client_body_min_rate
        self._fail(RequestTimeout(f"the request body arrived slower than {rate:g} bytes/s"))

    # -- the response (the instance connection's ResponseSink callbacks) ------------------
    def on_head(self, status: int, block: bytes) -> None:
        if self.closed:
            return
        self.status = status
        self.streaming = True
        if self.obs is not None:
            self.obs.head()
        if self.ka_timer is not None:
            self.ka_timer.cancel()
            self.ka_timer = None
        idle_end = self.loop.time() + self.engine.idle_timeout
        if idle_end < self.due_at:  # the idle timeout is the shorter one
            self._due(idle_end)
        lines, framed, sse = client_head_block(block)
        if self.ka_started:  # our own 200 text/event-stream head is out already
            if not sse or status != 200:
                ex = self.ex
                self._finish(status)
                ex.send(error_event(status, "the instance answered without an event stream"))
                ex.end()
                return
        else:
            nvcf_status = _NVCF_STATUS[status] if 0 <= status < 600 else status_for_nvcf(status)
            self.ex.start_response_block(status, lines, framed, self.request_id, nvcf_status)
        if sse:
            self.sse = True
            if self.tracked:
                self.engine.metrics.sse_open += 1

    def on_body(self, data: bytes) -> None:
        if not self.closed:
            self.ex.send(data)
            if self.obs is not None:
                self.obs.bytes_out += len(data)

    def on_end(self) -> None:
        self.ended = True

    def flush(self) -> None:
        """After each batch of bytes from the instance: pass on what it produced."""
        if self.closed:
            return
        ex = self.ex
        if self.ended:
            self._finish(self.status)
            ex.end()
            return
        ex.flush()
        if self.streaming:
            self.last = self.loop.time()
            conn = self.conn
            if conn is not None and ex.backlogged():  # a slow client: stop reading the instance until it drains
                conn.pause_reading()
                ex.when_writable(self._client_writable)

    def _client_writable(self) -> None:
        conn = self.conn
        if not self.closed and conn is not None:
            self.last = self.loop.time()
            conn.resume_reading()

    def on_lost(self, msg: str, before_response: bool) -> None:
        """The instance closed or reset the connection before the response was complete."""
        if self.closed:
            return
        self.conn = None  # dead: neither reused nor aborted
        metrics = self.engine.metrics
        if self.streaming:
            metrics.upstream_error("reset_mid_response")
            self.ex.abort()  # the client must see the response is incomplete
            self._finish(self.status)
            return
        metrics.upstream_error("reset")
        if before_response and not self.streamed and not self.retried:
            self._retry()  # a stale pooled connection, or an instance that just died
            return
        self._fail(UpstreamUnavailable(f"the instance failed: {msg}"))

    # -- timers --------------------------------------------------------------------------
    def _due(self, when: float) -> None:
        deadlines = self.engine.deadlines
        deadlines.remove(self.due_key, self)
        self.due_at = when
        self.due_key = deadlines.add(when, self)

    def on_deadline(self) -> None:
        if self.closed:
            return
        if not self.streaming:
            self._fail(self._timeout_error())
            return
        idle = self.engine.idle_timeout
        if self.loop.time() - self.last < idle:
            self.due_at = self.last + idle
            self.due_key = self.engine.deadlines.add(self.due_at, self)
            return
        self.ex.abort()  # no byte from the instance, or none taken by the client, for too long
        self._finish(self.status)

    def _timeout_error(self) -> ProxyError:
        return PollTimeout(_TIMEOUT_DETAIL)

    def _keepalive(self) -> None:
        """A streaming request still waits for its head: the gateway's own 200
        text/event-stream (once), then a comment; skipped while the client is slow."""
        self.ka_timer = None
        if self.closed or self.streaming:
            return
        ex = self.ex
        if not self.ka_started:
            self.ka_started = True
            ex.start_response(200, sse_head(self.request_id))
        if not ex.backlogged():
            ex.send(COMMENT)
            ex.flush()
        self.ka_timer = self.loop.call_later(self.engine.sse_keepalive, self._keepalive)

    # -- endings -------------------------------------------------------------------------
    def client_gone(self) -> None:
        if not self.closed:
            if self.tracked:
                self.engine.metrics.client_disconnects += 1
                self._app_error(499)
            self._finish(499)

    def cancel(self) -> None:
        """Stop this call without answering (its owner answers, or nobody waits)."""
        self._finish(499)

    def _fail(self, err: ProxyError) -> None:
        obs = self.obs
        if self.tracked and not self.closed:
            self._app_error(err.http_status)
            self.obs = None  # its record ends below, once the answer's bytes are known
        else:
            obs = None
        self._finish(err.http_status)
        sent = answer_error(self.ex, err, self.request_id, self.ka_started)
        if obs is not None:
            obs.bytes_out += sent
            obs.end(err.http_status, self.ex.body.received)

    def _app_error(self, status: int) -> None:
        route = self.route
        self.engine.metrics.nvcf.app_error(status, route.function_id if route is not None else "")

    def _finish(self, status: int) -> None:
        if self.closed:
            return
        self.closed = True
        engine = self.engine
        engine.deadlines.remove(self.due_key, self)
        if self.ka_timer is not None:
            self.ka_timer.cancel()
            self.ka_timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.rate_guard is not None:
            self.rate_guard.stop()
            self.rate_guard = None  # its callback refers back to this call: no cycle left behind
        ex = self.ex
        ex.on_disconnect = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            if self.ended:
                if self.streamed and not ex.body.eof:  # answered before the whole body went: not reusable
                    conn.reusable_body = False
                pool = engine.pool
                pool.release(conn)
            else:
                conn.abort()  # an unfinished exchange: the connection cannot be reused
        if self.streamed:
            ex.body.detach()
        lease = self.lease
        if lease is not None:
            self.lease = None
            lease.release()
        if self.tracked:
            metrics = engine.metrics
            if self.sse:
                metrics.sse_open -= 1
            metrics.in_flight -= 1
            if not metrics.in_flight and metrics.on_drained is not None:
                metrics.on_drained()  # the last one: a graceful stop waits for this
            route = self.route
            seconds = monotonic() - self.started
            metrics.observe(route.function_id if route is not None else UNKNOWN_FUNCTION, status, seconds, ex.method, self.endpoint)
            if route is not None:
                metrics.nvcf.invocation_ended(route.function_id, route.version_id, seconds)
            if self.obs is not None:
                self.obs.end(status, ex.body.received)
