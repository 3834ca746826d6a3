"""The forwarder: the one module that composes the hot path.

exchange -> route (Host / function-id headers) -> key check -> limiter slot ->
upstream connection -> stream both ways -> release. Every ProxyError becomes one
response here (`_send_error`); instance responses pass through unchanged, plus
`nvcf-reqid` and `nvcf-status`.

Two ways through it. `start(ex)` (HTTP/1.1, request complete) answers without a
task when nothing has to wait: a free slot, an idle pooled connection, no queued
keep-alive comments; the exchange is then driven by protocol callbacks
(proxy/fast_call.py). Everything else (queueing, connecting, streamed request
bodies, HTTP/2, pexec) runs `handle(ex)` as one task.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fngate.proxy.body_rate import BodyRateGuard
from fngate.proxy.deadlines import Deadlines
from fngate.proxy.errors import NotFound, PollTimeout, ProxyError, RequestTimeout, UpstreamTimeout, UpstreamUnavailable, status_for_nvcf
from fngate.proxy.exchange import ClientGone, Exchange, Headers
from fngate.proxy.fast_call import FastCall
from fngate.proxy.h2_fast_call import H2FastCall
from fngate.proxy.headers import RouteHeaders, client_headers, upstream_head
from fngate.proxy.limiter import Lease, Limiter
from fngate.proxy.lookup import KeyChecker, poll_seconds, resolve, target_from_host
from fngate.proxy.metrics import UNKNOWN_FUNCTION, Metrics
from fngate.proxy.request_ids import new_request_id, slot_owner
from fngate.proxy.routing import KeyGrant, SnapshotHolder, VersionRoute
from fngate.proxy.sse import QueueKeepAlive, error_event, wants_sse
from fngate.proxy.upstream.h1_client import H1Upstream, UpstreamLost
from fngate.proxy.upstream.pool import ConnectFailed, H1Pool

if TYPE_CHECKING:
    from fngate.proxy.config import GatewayConfig
    from fngate.proxy.pexec import Pexec

_CHUNKED = b"transfer-encoding: chunked\r\n"


class Call:
    """One request's state on the instance side, so a disconnect can tear it down."""

    __slots__ = ("body_rate", "body_task", "conn", "lease", "slow_body", "task", "timed_out")

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.conn: H1Upstream | None = None
        self.timed_out = False
        self.task: asyncio.Task[None] | None = None
        self.body_task: asyncio.Task[None] | None = None
        self.body_rate: BodyRateGuard | None = None  # while a streamed request body holds the slot
        self.slow_body: RequestTimeout | None = None  # set when that body fell below the minimum rate

    def cancel(self) -> None:
        """The client went away: close the instance connection now and stop the task."""
        if self.conn is not None:
            self.conn.abort()
        if self.task is not None:
            self.task.cancel()

    def head_timeout(self) -> None:
        self.timed_out = True
        if self.conn is not None:
            self.conn.abort()

    def body_too_slow(self, detail: str) -> None:
        """The client sends its body below the minimum rate: end the instance's side now
        (the slot is released as the task unwinds; the client gets 408)."""
        self.slow_body = RequestTimeout(detail)
        if self.conn is not None:
            self.conn.abort()

    def done(self, pool: H1Pool) -> None:
        if self.body_rate is not None:
            self.body_rate.stop()
            self.body_rate = None  # its on_slow callback refers back to this call: no cycle left behind
        if self.body_task is not None and not self.body_task.done():
            self.body_task.cancel()
            if self.conn is not None:  # the instance answered before taking the whole body
                self.conn.reusable_body = False
        if self.conn is not None:
            pool.release(self.conn)
            self.conn = None
        if self.lease is not None:
            self.lease.release()
            self.lease = None


class Forwarder:
    __slots__ = (
        "config",
        "connections",
        "deadlines",
        "holder",
        "keys",
        "limiter",
        "metrics",
        "pexec",
        "pool",
        "route_headers",
    )

    def __init__(self, config: GatewayConfig, holder: SnapshotHolder, limiter: Limiter, pool: H1Pool, metrics: Metrics) -> None:
        self.config = config
        self.holder = holder
        self.limiter = limiter
        self.pool = pool
        self.metrics = metrics
        self.keys = KeyChecker()
        self.route_headers = RouteHeaders(config.region)
        self.pexec: Pexec | None = None
        self.connections: set[Any] = set()  # open client connections (h1/h2 drivers), for a graceful stop
        self.deadlines: Deadlines | None = None  # the fast path's timeouts (made on first use)

    # -- entry --------------------------------------------------------------------------
    def start(self, ex: Exchange) -> None:
        """Answer a complete request: from callbacks when nothing has to wait, else in a task."""
        started = time.monotonic()
        request_id = new_request_id()
        try:
            target_fid, vid, auth, poll_h = self._target(ex)
            if target_fid is None:  # pexec or health: rare, the task does it
                ex.spawn(self.handle(ex, request_id, started))
                return
            fid = target_fid
            route, grant, deadline = self._authorize(fid, vid, auth, poll_h, started)
        except ProxyError as err:  # not routed, or not authenticated: no label of its own
            self._send_error(ex, err, request_id)
            self.metrics.observe(UNKNOWN_FUNCTION, err.http_status, time.monotonic() - started)
            return
        if not (self.config.sse_queue_keepalive > 0 and wants_sse(ex)):
            lease = self.limiter.try_acquire(route, None, slot_owner(ex))
            if lease is not None:
                ep = lease.endpoint
                conn = self.pool.take_idle(ep.host, ep.port)
                if conn is not None:
                    (H2FastCall if ex.http2 else FastCall)(self, ex, route, grant, request_id, started, deadline, lease, conn)  # type: ignore[arg-type]  # ex.http2 says which exchange it is
                    return
                # no idle connection: the task connects, with the slot taken here
                ex.spawn(self.handle(ex, request_id, started, (route, grant, deadline), held=lease))
                return
        ex.spawn(self.handle(ex, request_id, started, (route, grant, deadline)))

    def _target(self, ex: Exchange) -> tuple[str | None, str | None, bytes | None, bytes | None]:
        """(function id, version id, authorization, nvcf-poll-seconds) from the request;
        function id None for pexec and health paths. Raises NotFound."""
        fid_h = vid_h = auth = poll_h = None
        for n, v in ex.headers:
            if n == b"authorization":
                auth = v
            elif n == b"function-id":
                fid_h = v
            elif n == b"function-version-id":
                vid_h = v
            elif n == b"nvcf-poll-seconds":
                poll_h = v
        if fid_h is not None:
            return (
                fid_h.decode("latin-1").strip().lower(),
                vid_h.decode("latin-1").strip().lower() if vid_h is not None else None,
                auth,
                poll_h,
            )
        target = ex.target
        if (target[:15] == b"/v2/nvcf/pexec/" and self.pexec is not None) or target == b"/health" or target == b"/v2/health/ready":
            return None, None, auth, poll_h
        hit = target_from_host(ex.authority.decode("latin-1"))
        if hit is None:
            raise NotFound("No function matches the request's Host or function-id header")
        return hit[0], hit[1], auth, poll_h

    def _authorize(
        self, fid: str, vid: str | None, auth: bytes | None, poll_h: bytes | None, started: float
    ) -> tuple[VersionRoute, KeyGrant, float]:
        """(route, grant, head deadline) against the current snapshot. Raises ProxyError."""
        table = self.holder.table
        grant = self.keys.check(table, auth, fid, vid)
        route = resolve(table, fid, vid, grant)
        poll = poll_seconds(poll_h, self.config.default_poll_seconds)
        return route, grant, started + poll + self.config.header_grace

    async def handle(
        self,
        ex: Exchange,
        request_id: bytes | None = None,
        started: float = 0.0,
        routed: tuple[VersionRoute, KeyGrant, float] | None = None,
        held: Lease | None = None,
        retry_of: Lease | None = None,
    ) -> None:
        """One exchange as a task. `routed`: (route, grant, deadline) when `start` resolved
        it already; `held`: a slot `start` took already; `retry_of`: the fast path's slot
        whose instance failed before answering (the one retry goes elsewhere)."""
        if request_id is None:
            started = time.monotonic()
            request_id = new_request_id()
        function_id = UNKNOWN_FUNCTION  # until the key check and the route both passed
        status = 0
        metrics = self.metrics
        metrics.in_flight += 1
        call = Call()
        call.task = asyncio.current_task()
        ex.on_disconnect = call.cancel
        try:
            if routed is None:
                fid, vid, auth, poll_h = self._target(ex)
                if fid is None:
                    target = ex.target
                    if target[:15] == b"/v2/nvcf/pexec/" and self.pexec is not None:
                        if self.pexec.siblings is not None:  # --workers N: the id names its worker
                            request_id = self.pexec.siblings.tag(request_id)
                        status = await self.pexec.handle(ex, request_id, auth, poll_h, call)
                        return
                    status = 200
                    self._simple(ex, 200, b'{"status":"ok"}', request_id)
                    return
                routed = self._authorize(fid, vid, auth, poll_h, started)
            route, grant, deadline = routed
            function_id = route.function_id
            status = await self.forward(ex, route, grant, request_id, deadline, call, ex.target, True, held, retry_of)
        except ProxyError as err:
            status = err.http_status
            self._send_error(ex, err, request_id)
        except (ClientGone, asyncio.CancelledError):
            status = 499
            metrics.client_disconnects += 1
            ex.abort()
        finally:
            call.done(self.pool)
            metrics.in_flight -= 1
            metrics.observe(function_id, status, time.monotonic() - started)

    # -- the streaming forward ------------------------------------------------------------
    async def forward(
        self,
        ex: Exchange,
        route: VersionRoute,
        grant: KeyGrant,
        request_id: bytes,
        deadline: float,
        call: Call,
        target: bytes,
        host_routed: bool,
        held: Lease | None = None,
        retry_of: Lease | None = None,
    ) -> int:
        keepalive = None
        if self.config.sse_queue_keepalive > 0 and wants_sse(ex):
            keepalive = QueueKeepAlive(ex, self.config.sse_queue_keepalive, request_id)
        try:
            status, headers = await self.call_instance(ex, route, grant, request_id, deadline, call, target, host_routed, held, retry_of)
        except ProxyError as err:
            if keepalive is None or not keepalive.started:
                raise
            ex.write_nowait(error_event(err.http_status, err.detail or type(err).__name__))
            ex.end()
            return err.http_status
        finally:
            if keepalive is not None:
                keepalive.stop()
        conn = call.conn
        assert conn is not None  # call_instance returned: it holds the answering connection
        sse = False
        for n, v in headers:
            if n == b"content-type" and v[:17] == b"text/event-stream":
                sse = True
                break
        body = conn.body
        assert body is not None  # a response head came: its body buffer exists
        if keepalive is not None and keepalive.started:  # our 200 head is out already
            if not sse or status != 200:
                ex.write_nowait(error_event(status, "the instance answered without an event stream"))
                ex.end()
                return status
        else:
            ex.start_response(status, client_headers(headers, request_id, status_for_nvcf(status)), flush=not (body.size or body.eof))
        if sse:
            self.metrics.sse_open += 1
        try:
            await self.relay_body(ex, conn)
        finally:
            if sse:
                self.metrics.sse_open -= 1
        ex.end()
        return status

    async def relay_body(self, ex: Exchange, conn: H1Upstream) -> None:
        """Response body, chunk by chunk as it arrives (SSE events are never held), with an
        idle timeout, not a total one: no byte from the instance, or a client that takes
        none, for `idle_timeout` ends both legs."""
        body = conn.body
        assert body is not None  # a response head came: its body buffer exists
        loop = asyncio.get_running_loop()
        idle = self.config.idle_timeout
        state: list[Any] = [loop.time(), None]

        def watchdog() -> None:
            if loop.time() - state[0] >= idle:
                conn.abort()
                ex.abort()
            else:
                state[1] = loop.call_at(state[0] + idle, watchdog)

        state[1] = loop.call_later(idle, watchdog)
        try:
            while True:
                try:
                    chunk = await body.read()
                except UpstreamLost:
                    self.metrics.upstream_error("reset_mid_response")
                    ex.abort()  # the client must see the response is incomplete
                    raise ClientGone() from None
                if not chunk:
                    return
                state[0] = loop.time()
                await ex.write(chunk)
        finally:
            state[1].cancel()

    async def call_instance(
        self,
        ex: Exchange,
        route: VersionRoute,
        grant: KeyGrant,
        request_id: bytes,
        deadline: float,
        call: Call,
        target: bytes,
        host_routed: bool,
        held: Lease | None = None,
        retry_of: Lease | None = None,
    ) -> tuple[int, Headers]:
        """Take a slot, send the request, and wait for the response head (until the
        deadline). Connect failures and resets before any response byte are retried
        once on another instance while the request body has not started streaming;
        `retry_of`: the first attempt was made already (by the fast path) and failed."""
        if held is not None:
            call.lease = lease = held
        elif retry_of is None:
            call.lease = lease = await self.limiter.admit(route, deadline, request_id.decode(), owner=slot_owner(ex))
        else:
            call.lease = retry_of
            lease = await self._retry_lease(call, route, deadline, request_id, slot_owner(ex))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(max(deadline - time.monotonic(), 0), call.head_timeout)
        try:
            body_line, inline = self._body_framing(ex)
            streamed = False
            for attempt in (0, 1) if retry_of is None else (1,):
                ep = lease.endpoint
                try:
                    conn, _ = await self.pool.acquire(ep.host, ep.port)
                except ConnectFailed as exc:
                    self.metrics.upstream_error("connect")
                    if attempt or call.timed_out:
                        raise UpstreamUnavailable(str(exc)) from None
                    lease = await self._retry_lease(call, route, deadline, request_id, slot_owner(ex))
                    continue
                call.conn = conn
                poll_left = max(round(deadline - self.config.header_grace - time.monotonic()), 1)
                head = upstream_head(
                    ex.method,
                    target,
                    ex.headers,
                    self.route_headers.for_route(route),
                    host=b"%s:%d" % (ep.host.encode(), ep.port),
                    request_id=request_id,
                    subject=grant.subject.encode() or grant.key_id.encode(),
                    nca_id=grant.nca_id.encode(),
                    poll_left=poll_left,
                    body=body_line,
                    client_addr=ex.client_addr,
                    host_routed=host_routed,
                    authority=ex.authority,
                    http2=ex.http2,
                    scheme=ex.scheme,
                )
                conn.start(head + inline if inline else head, ex.method == "HEAD")
                if body_line is not None and inline is None:
                    streamed = True
                    call.body_task = loop.create_task(self._pump_body(ex, conn, body_line is _CHUNKED))
                    self._guard_body_rate(call, ex, loop)
                try:
                    return (*await conn.response(),)
                except UpstreamLost as exc:
                    call.conn = None
                    conn.abort()
                    if call.slow_body is not None:
                        raise call.slow_body from None
                    if call.timed_out:
                        raise PollTimeout("the instance sent no response headers within the poll window") from None
                    self.metrics.upstream_error("reset")
                    if attempt or streamed or not exc.before_response:
                        raise UpstreamUnavailable(f"the instance failed: {exc}") from None
                    lease = await self._retry_lease(call, route, deadline, request_id, slot_owner(ex))
            raise UpstreamUnavailable("the instance failed")
        finally:
            timer.cancel()

    async def _retry_lease(self, call: Call, route: VersionRoute, deadline: float, request_id: bytes, owner: object) -> Lease:
        self.metrics.retries += 1
        failed = call.lease
        assert failed is not None  # the failed attempt held a slot
        call.lease = None
        failed.release()
        route = resolve(self.holder.table, route.function_id, route.version_id)
        call.lease = lease = await self.limiter.admit(route, deadline, request_id.decode(), exclude=failed.endpoint.id, owner=owner)
        return lease

    def _guard_body_rate(self, call: Call, ex: Exchange, loop: asyncio.AbstractEventLoop) -> None:
        """The request holds a slot while its body streams in: hold the client to the
        minimum body rate (proxy/body_rate.py)."""
        cfg = self.config
        rate = cfg.client_body_min_rate
        if rate > 0 and call.body_rate is None and not ex.body.eof:
            detail = f"the request body arrived slower than {rate:g} bytes/s"
            call.body_rate = BodyRateGuard(
                loop, ex.body, rate, cfg.client_body_rate_window, cfg.client_body_rate_grace, lambda: call.body_too_slow(detail)
            )

    def _body_framing(self, ex: Exchange) -> tuple[bytes | None, bytes | None]:
        """(framing header line or None, whole body if already received else None)."""
        body = ex.body
        length = None
        chunked = False
        for n, v in ex.headers:
            if n == b"content-length":
                length = v
            elif n == b"transfer-encoding":
                chunked = True
        if length is None and not chunked and (not ex.http2 or (body.eof and body.size == 0)):
            return None, None
        if body.eof and not getattr(ex, "expect_continue", False):
            data = body.take_whole()
            return b"content-length: %d\r\n" % len(data), data
        if length is not None:
            return b"content-length: %s\r\n" % length, None
        return _CHUNKED, None

    async def _pump_body(self, ex: Exchange, conn: H1Upstream, chunked: bool) -> None:
        try:
            while True:
                data = await ex.read()
                if not data:
                    if chunked:
                        await conn.write(b"0\r\n\r\n")
                    return
                await conn.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        except ClientGone:
            conn.abort()
        except UpstreamLost:
            conn.reusable_body = False  # the instance answered without reading it all

    # -- answers the gateway makes itself ---------------------------------------------------
    def _send_error(self, ex: Exchange, err: ProxyError, request_id: bytes) -> None:
        if isinstance(err, UpstreamTimeout | PollTimeout) and ex.response_started:
            ex.abort()
            return
        if ex.response_started or ex.finished:
            ex.abort()
            return
        ctype, body = err.body()
        headers = [(b"content-length", b"%d" % len(body))]
        if ctype:
            headers.append((b"content-type", ctype))
        headers.extend(err.headers)
        headers.append((b"nvcf-reqid", request_id))
        headers.append((b"nvcf-status", b"errored"))
        try:
            ex.start_response(err.http_status, headers, flush=False)
            if body:
                ex.write_nowait(body)
            ex.end()
        except ClientGone:
            ex.abort()

    def _simple(self, ex: Exchange, status: int, body: bytes, request_id: bytes) -> None:
        ex.start_response(status, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], flush=False)
        ex.write_nowait(body)
        ex.end()
