"""The fast path: one exchange forwarded to an HTTP/1.1 instance by protocol callbacks, with no task.

`Forwarder.start` builds a FastCall when a complete request found a free slot and an
idle pooled connection at once (the common case under load). The request leaves in
one write; the response is pushed here by the instance connection as it is parsed
(proxy/upstream/h1_client.py, callback mode), and what one batch of socket bytes
produced (head, body chunks, end) leaves for the client in one write at `flush`.
So a small request costs two socket writes and no coroutine, future or task.
FastCall serves HTTP/1.1 clients; H2FastCall (proxy/h2_fast_call.py) HTTP/2 ones.

The behaviour is the task path's (forward.py): the same headers both ways, the head
deadline (504 when no head arrived within the poll window), the idle timeout once
streaming (SSE events are written as they arrive, never held), backpressure (a slow
client pauses reading from the instance), a client disconnect closing the instance
connection, and one retry on another instance, handed to the task path, when the
instance failed before its first response byte.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fngate.proxy.deadlines import Deadlines
from fngate.proxy.errors import PollTimeout, ProxyError, UpstreamUnavailable, status_for_nvcf
from fngate.proxy.headers import client_head_block, upstream_head

if TYPE_CHECKING:
    from fngate.proxy.forward import Forwarder
    from fngate.proxy.h1 import H1Exchange
    from fngate.proxy.limiter import Lease
    from fngate.proxy.routing import KeyGrant, VersionRoute
    from fngate.proxy.upstream.h1_client import H1Upstream

_TIMEOUT_DETAIL = "the instance sent no response headers within the poll window"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # framed with content-length: 0 even when empty


class FastCall:
    __slots__ = (
        "closed",
        "conn",
        "deadline",
        "deadlines",
        "due_at",
        "due_key",
        "ended",
        "ex",
        "fw",
        "grant",
        "last",
        "lease",
        "loop",
        "out",
        "request_id",
        "route",
        "sse",
        "started",
        "status",
        "streaming",
    )

    def __init__(
        self,
        fw: Forwarder,
        ex: H1Exchange,
        route: VersionRoute,
        grant: KeyGrant,
        request_id: bytes,
        started: float,
        deadline: float,
        lease: Lease,
        conn: H1Upstream,
    ) -> None:
        self.fw = fw
        self.loop = loop = ex.conn._loop
        self.ex = ex
        self.route = route
        self.grant = grant
        self.request_id = request_id
        self.started = started
        self.deadline = deadline
        self.lease = lease
        self.conn = conn
        self.out: list[bytes] = []
        self.status = 0
        self.streaming = False  # the head arrived: the idle timeout applies from now on
        self.sse = False
        self.ended = False
        self.closed = False
        self.last = 0.0
        fw.metrics.in_flight += 1
        ex.on_disconnect = self.client_gone
        deadlines = fw.deadlines
        if deadlines is None:
            deadlines = fw.deadlines = Deadlines(loop)
        self.deadlines = deadlines
        self.due_at = due = loop.time() + max(deadline - started, 0)
        self.due_key = deadlines.add(due, self)
        wire = fw.route_headers
        subject, nca_id = wire.for_grant(grant)
        body = ex.body.take_whole()
        head = upstream_head(
            ex.method,
            ex.target,
            ex.headers,
            wire.for_route(route),
            host=wire.for_endpoint(lease.endpoint),
            request_id=request_id,
            subject=subject,
            nca_id=nca_id,
            poll_left=max(round(deadline - fw.config.header_grace - started), 1),
            body=b"content-length: %d\r\n" % len(body) if body or ex.method in _BODY_METHODS else None,
            client_addr=ex.client_addr,
            host_routed=True,
            authority=ex.authority,
            http2=ex.http2,
            scheme=ex.scheme,
        )
        conn.start_sink(head + body if body else head, ex.method == "HEAD", self)

    # -- the instance connection's callbacks (ResponseSink) --------------------------------
    def on_head(self, status: int, block: bytes) -> None:
        self.status = status
        self.streaming = True
        idle_end = self.loop.time() + self.fw.config.idle_timeout
        if idle_end < self.due_at:  # the idle timeout is the shorter one
            self._due(idle_end)
        lines, framed, sse = client_head_block(block)
        if sse:
            self.sse = True
            self.fw.metrics.sse_open += 1
        self._client_head(status, lines, framed, status_for_nvcf(status))

    def _client_head(self, status: int, lines: bytes, framed: bool, nvcf_status: bytes) -> None:
        ex = self.ex
        ex.start_response_block(status, lines + b"nvcf-reqid: %s\r\nnvcf-status: %s\r\n" % (self.request_id, nvcf_status), framed)
        self.out.append(ex.frame(b""))

    def on_body(self, data: bytes) -> None:
        self.out.append(self.ex.frame(data))

    def on_end(self) -> None:
        self.ended = True
        self.out.append(self.ex.frame_end())

    def flush(self) -> None:
        if self.closed:
            return
        ex = self.ex
        client = ex.conn
        transport = client.transport
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if data and not client.closed:
                transport.write(data)
        if self.ended:
            self._finish(self.status)
            client.exchange_done(ex)
            return
        if self.streaming:
            self.last = self.loop.time()
            # A slow client: stop reading from the instance until it drains. The client's
            # transport may hold up to max_body_buffer first, as the task path's buffer does:
            # pausing at every high-water mark costs two epoll calls per 64 KiB.
            if client.write_paused and transport.get_write_buffer_size() >= self.fw.config.max_body_buffer:
                self._instance_transport().pause_reading()
                client.on_writable = self._client_writable

    def on_lost(self, msg: str, before_response: bool) -> None:
        if self.closed:
            return
        fw = self.fw
        if before_response:
            # a stale keep-alive connection, or an instance that died: the task path
            # retries once on another instance (the request body is still at hand)
            fw.metrics.upstream_error("reset")
            self._detach()
            fw.metrics.in_flight -= 1
            self.ex.spawn(fw.handle(self.ex, self.request_id, self.started, (self.route, self.grant, self.deadline), retry_of=self.lease))
            return
        if not self.streaming:
            fw.metrics.upstream_error("reset")
            self._fail(UpstreamUnavailable(f"the instance failed: {msg}"))
            return
        fw.metrics.upstream_error("reset_mid_response")
        self.ex.abort()  # the client must see the response is incomplete
        self._finish(self.status)

    # -- timers, backpressure, the client going away ----------------------------------------
    def _instance_transport(self) -> asyncio.Transport:
        transport = self.conn.transport
        assert transport is not None  # taken from the pool's idle connections: connected
        return transport

    def _due(self, when: float) -> None:
        deadlines = self.deadlines
        deadlines.remove(self.due_key, self)
        self.due_at = when
        self.due_key = deadlines.add(when, self)

    def on_deadline(self) -> None:
        if self.closed:
            return
        if not self.streaming:
            self._fail(PollTimeout(_TIMEOUT_DETAIL))
            return
        idle = self.fw.config.idle_timeout
        if self.loop.time() - self.last < idle:
            self.due_at = self.last + idle
            self.due_key = self.deadlines.add(self.due_at, self)
            return
        self.ex.abort()  # no byte from the instance, or none taken by the client, for too long
        self._finish(self.status)

    def _client_writable(self) -> None:
        if not self.closed:
            self.last = self.loop.time()
            self._instance_transport().resume_reading()

    def client_gone(self) -> None:
        if not self.closed:
            self.fw.metrics.client_disconnects += 1
            self._finish(499)

    # -- endings ------------------------------------------------------------------------------
    def _fail(self, err: ProxyError) -> None:
        """No response head went out: the gateway answers (502, 504)."""
        self._finish(err.http_status)
        self.fw._send_error(self.ex, err, self.request_id)

    def _detach(self) -> None:
        self.closed = True
        self.deadlines.remove(self.due_key, self)
        conn = self.conn
        if conn.sink is self:
            conn.sink = None
            conn.abort()
        self.lease.release()
        self.ex.on_disconnect = None

    def _finish(self, status: int) -> None:
        if self.closed:
            return
        if self.ended:
            self.closed = True
            self.deadlines.remove(self.due_key, self)
            self.fw.pool.release(self.conn)
            self.lease.release()
            self.ex.on_disconnect = None
        else:
            self._detach()  # an unfinished exchange: the instance connection cannot be reused
        fw = self.fw
        metrics = fw.metrics
        if self.sse:
            metrics.sse_open -= 1
        metrics.in_flight -= 1
        metrics.observe(self.route.function_id, status, time.monotonic() - self.started)
