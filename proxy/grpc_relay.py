"""Relay of one gRPC call between a client stream and an instance stream, at the HTTP/2 level.

Headers, DATA and trailers go through unchanged (protobuf is never decoded); the
gateway adds `nvcf-reqid` to the response headers, rewrites `grpc-timeout` to the
time left, and drops the caller's `authorization`. Flow control is end to end:
client DATA is acknowledged to the client only once written to the instance, and
instance DATA is acknowledged to the instance only once written to the client.
A reset on either side resets the other; a deadline ends both.

The HTTP/2 server driver feeds a GrpcCall through `on_data`/`on_trailers`/`on_reset`
and gives it a Downstream to answer on (see GrpcHandler.open).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ngh2 import ErrorCode, NeverIndexedHeader

from fngate.proxy.grpc import (
    FramingError,
    GrpcError,
    MessageFraming,
    Status,
    encode_message,
    format_timeout,
    parse_timeout,
    status_of,
    trailers_only,
)
from fngate.proxy.grpc_metrics import GrpcMetrics
from fngate.proxy.grpc_route import route_call
from fngate.proxy.routing import Endpoint, SnapshotHolder, VersionRoute
from fngate.proxy.upstream.h2_client import H2Upstream, H2UpstreamPool, UpstreamLost

Headers = list[tuple[bytes, bytes]]

# the request headers routing reads (proxy.grpc_route.route_call), and the deadline
_ROUTING = frozenset({b":authority", b"function-id", b"function-version-id", b"authorization", b"grpc-timeout"})
# request headers never sent to the instance: the caller's key and connection-specific ones
_DROP = frozenset(
    {b"authorization", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"grpc-timeout", b"nvcf-reqid"}
)


class Downstream(Protocol):
    """The client side of one stream, provided by the HTTP/2 server driver."""

    def send_headers(self, headers: Headers, end_stream: bool = False) -> None: ...
    async def send_data(self, data: bytes, end_stream: bool = False) -> None: ...  # returns once within the client's window
    def send_trailers(self, headers: Headers) -> None: ...
    def reset(self, error_code: int) -> None: ...
    def ack(self, n: int) -> None: ...  # flow-control credit for n bytes of request DATA


class Lease(Protocol):
    endpoint: Endpoint

    def release(self) -> None: ...


# admit(route, deadline (time.monotonic), request id) -> a slot on one instance, after waiting
# in the version's FIFO (shared with HTTP) no later than the deadline: proxy.limiter.Limiter.admit
Admit = Callable[[VersionRoute, float, str], Awaitable[Lease]]


class GrpcHandler:
    """Entry point for gRPC streams: route, admit, then relay to an instance."""

    def __init__(
        self,
        holder: SnapshotHolder,
        admit: Admit,
        pool: H2UpstreamPool | None = None,
        metrics: GrpcMetrics | None = None,
        *,
        queue_timeout: float = 60.0,
        max_message: int = 1 << 30,
    ) -> None:
        self.holder = holder
        self.admit = admit
        self.pool = pool or H2UpstreamPool()
        self.metrics = metrics or GrpcMetrics()
        self.queue_timeout = queue_timeout  # the poll window when the call has no grpc-timeout
        self.max_message = max_message
        self.calls: set[GrpcCall] = set()

    def open(self, headers: Headers, downstream: Downstream, end_stream: bool = False) -> GrpcCall:
        """Start relaying a new client stream; the driver then feeds the returned call."""
        call = GrpcCall(self, headers, downstream, end_stream)
        self.calls.add(call)
        call.task = asyncio.get_running_loop().create_task(call.run())
        return call

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` for the calls in progress to end; True when none is left."""
        deadline = time.monotonic() + timeout
        while self.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not self.calls

    async def aclose(self) -> None:
        """End what is still running (UNAVAILABLE to the client, a reset to the instance)
        and close the instance connections."""
        for call in list(self.calls):
            call.abort(GrpcError(Status.UNAVAILABLE, "the gateway is shutting down"))
        self.pool.close()


class GrpcCall:
    """One relayed call. Request items and response items each flow through a deque
    drained by one coroutine, so each direction can wait for its receiver's window."""

    __slots__ = (
        "_conn",
        "_finished",
        "_framing",
        "_lease",
        "_req",
        "_req_ended",
        "_req_wake",
        "_resp",
        "_resp_wake",
        "_responded",
        "_sid",
        "_status",
        "_timer",
        "deadline",
        "down",
        "function_id",
        "handler",
        "headers",
        "request_id",
        "started",
        "task",
    )

    def __init__(self, handler: GrpcHandler, headers: Headers, down: Downstream, end_stream: bool) -> None:
        self.handler = handler
        self.headers = headers
        self.down = down
        self.task: asyncio.Task[None] | None = None
        self.request_id = str(uuid.uuid4())
        self.function_id = ""
        self.started = time.monotonic()
        self.deadline: float | None = None
        self._req: deque[Any] = deque()  # (data, flow_len, end) tuples, then the trailers list
        self._req_wake: asyncio.Future[None] | None = None
        self._resp: deque[Any] = deque()  # (headers, end) pairs and (data, flow_len, end) triples
        self._resp_wake: asyncio.Future[None] | None = None
        self._conn: H2Upstream | None = None
        self._sid = 0
        self._lease: Lease | None = None
        self._framing = MessageFraming(handler.max_message)
        self._responded = False  # response headers sent to the client
        self._finished = False
        self._req_ended = end_stream
        self._timer: asyncio.TimerHandle | None = None
        self._status: Status | None = None
        if end_stream:
            self._req.append((b"", 0, True))

    # -- fed by the server driver ----------------------------------------------------------
    def on_data(self, data: bytes, flow_len: int, end_stream: bool) -> None:
        if self._finished:
            self._down(self.down.ack, flow_len)
            return
        self._req_ended = end_stream
        self._req.append((data, flow_len, end_stream))
        self._wake_req()

    def on_trailers(self, headers: Headers) -> None:
        if not self._finished:
            self._req_ended = True
            self._req.append(headers)
            self._wake_req()

    def on_reset(self, error_code: int) -> None:
        """The client reset the stream (or its connection went away): cancel upstream."""
        if self._finished:
            return
        self._upstream_reset(ErrorCode.CANCEL)
        self._finish(Status.CANCELLED)

    # -- fed by the upstream connection (StreamSink) ---------------------------------------
    def on_response(self, headers: Headers, end_stream: bool) -> None:
        self._resp.append((headers, end_stream))
        self._wake_resp()

    def on_data_up(self, data: bytes, flow_len: int, end_stream: bool) -> None:
        self._resp.append((data, flow_len, end_stream))
        self._wake_resp()

    def on_trailers_up(self, headers: Headers) -> None:
        self._resp.append((headers, True))
        self._wake_resp()

    def on_reset_up(self, error_code: int) -> None:
        """The instance reset the stream: pass the reset on to the client."""
        if self._finished:
            return
        self._down(self.down.reset, error_code)
        self._finish(Status.CANCELLED if error_code == ErrorCode.CANCEL else Status.UNAVAILABLE)

    def on_lost(self, exc: Exception) -> None:
        if not self._finished:
            self._fail(GrpcError(Status.UNAVAILABLE, f"instance unreachable: {exc}"))

    # -- the call --------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            route = self._route()
            wait_until = time.monotonic() + self.handler.queue_timeout
            if self.deadline is not None and self.deadline < wait_until:
                wait_until = self.deadline
            self._lease = await self.handler.admit(route, wait_until, self.request_id)
            if self._finished:  # cancelled or timed out while queued
                return
            endpoint = self._lease.endpoint
            try:
                conn = await self.handler.pool.acquire(endpoint.host, endpoint.port)
            except UpstreamLost as exc:
                raise GrpcError(Status.UNAVAILABLE, f"instance unreachable: {exc}") from None
            if self._finished:
                return
            self._conn = conn
            self._sid = conn.open_stream(self._upstream_headers(endpoint), _Sink(self))
            resp = asyncio.get_running_loop().create_task(self._pump_response())
            try:
                await self._pump_request()
                await resp
            finally:
                resp.cancel()
        except asyncio.CancelledError:
            if not self._finished:
                self._upstream_reset(ErrorCode.CANCEL)
                self._finish(Status.CANCELLED)
        except Exception as exc:  # every failure ends as a gRPC status to the client
            self._fail(exc)
        finally:
            self._finish(self._status or Status.UNKNOWN)

    def _route(self) -> VersionRoute:
        meta = {}
        for name, value in self.headers:
            if name in _ROUTING:
                meta[name.decode("latin-1")] = value.decode("latin-1")
        timeout = meta.get("grpc-timeout")
        now = time.monotonic()
        if timeout is not None:
            try:
                self.deadline = now + parse_timeout(timeout)
            except ValueError as exc:
                raise GrpcError(Status.INVALID_ARGUMENT, str(exc)) from None
        route = route_call(self.handler.holder.table, meta)
        self.function_id = route.function_id
        self.handler.metrics.started(self.function_id)
        if self.deadline is None:
            # no grpc-timeout: only the wait for an instance is bounded (the poll window)
            self._timer = asyncio.get_running_loop().call_later(self.handler.queue_timeout, self._queue_expired)
        else:
            self._timer = asyncio.get_running_loop().call_at(self.deadline, self._deadline_passed)
        return route

    def _upstream_headers(self, endpoint: Endpoint) -> Headers:
        out = [(n, v) for n, v in self.headers if n not in _DROP]
        # values unique to this call are kept out of the HPACK dynamic table
        if self.deadline is not None:
            out.append(NeverIndexedHeader(b"grpc-timeout", format_timeout(self.deadline - time.monotonic()).encode()))
        out.append(NeverIndexedHeader(b"nvcf-reqid", self.request_id.encode()))
        return out

    async def _pump_request(self) -> None:
        conn, sid, down = self._conn, self._sid, self.down
        assert conn is not None  # the pumps start only once the instance stream is open
        while True:
            while not self._req:
                self._req_wake = asyncio.get_running_loop().create_future()
                await self._req_wake
            item = self._req.popleft()
            if isinstance(item, list):  # request trailers end the request
                conn.send_trailers(sid, item)
                return
            data, flow_len, end = item
            try:
                self._framing.feed(data)
                if end and not self._framing.at_boundary():
                    raise FramingError("request ended inside a gRPC message")
            except FramingError:
                self._upstream_reset(ErrorCode.CANCEL)
                self._down(down.reset, ErrorCode.PROTOCOL_ERROR)
                self._finish(Status.INTERNAL)
                return
            if (data or end) and not await conn.send_data(sid, data, end_stream=end):
                down.ack(flow_len)  # the instance already ended or reset the stream
                return
            down.ack(flow_len)
            if end:
                return

    async def _pump_response(self) -> None:
        try:
            await self._relay_response()
        except Exception:  # the client went away mid-response: same as its reset
            self.on_reset(ErrorCode.CANCEL)

    async def _relay_response(self) -> None:
        conn, sid, down = self._conn, self._sid, self.down
        assert conn is not None  # the pumps start only once the instance stream is open
        while True:
            while not self._resp:
                self._resp_wake = asyncio.get_running_loop().create_future()
                await self._resp_wake
            item = self._resp.popleft()
            if len(item) == 2:  # headers: initial (maybe trailers-only) or trailers
                headers, end = item
                if not self._responded:
                    self._responded = True
                    self._cancel_queue_timer()
                    headers = headers + [NeverIndexedHeader(b"nvcf-reqid", self.request_id.encode())]
                    down.send_headers(headers, end_stream=end)
                elif end:
                    down.send_trailers(headers)
                if end:
                    self._complete(headers)
                    return
            else:
                data, flow_len, end = item
                await down.send_data(data, end_stream=end)
                conn.ack(sid, flow_len)
                if end:  # DATA with END_STREAM and no trailers: not valid gRPC, but pass it on
                    self._complete(())
                    return

    def _complete(self, headers: Headers | tuple[()]) -> None:
        status = Status.UNKNOWN
        for name, value in headers:
            if name == b"grpc-status":
                try:
                    status = Status(int(value))
                except ValueError:
                    pass
                break
        if not self._req_ended:
            # the instance ended the call before the client finished sending: stop both
            self._upstream_reset(ErrorCode.NO_ERROR)
            self._down(self.down.reset, ErrorCode.NO_ERROR)
        self._finish(status)

    # -- endings ---------------------------------------------------------------------------
    def _deadline_passed(self) -> None:
        if not self._finished:
            self._upstream_reset(ErrorCode.CANCEL)
            self._fail(GrpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded"))

    def _queue_expired(self) -> None:
        if not self._finished and self._conn is None:
            self._fail(GrpcError(Status.DEADLINE_EXCEEDED, "no instance became available within the poll window"))
        self._timer = None

    def _cancel_queue_timer(self) -> None:
        if self.deadline is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self, exc: BaseException) -> None:
        """End the call now with the gRPC status of `exc`."""
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """End the call with a gRPC status the gateway produced."""
        if self._finished:
            return
        status, message = status_of(exc)
        self._upstream_reset(ErrorCode.CANCEL)
        if self._responded:
            trailers = [(b"grpc-status", b"%d" % status), (b"grpc-message", encode_message(message).encode())]
            self._down(self.down.send_trailers, trailers)
        else:
            self._responded = True
            headers = trailers_only(status, message, (NeverIndexedHeader(b"nvcf-reqid", self.request_id.encode()),))
            self._down(self.down.send_headers, headers, True)
        if not self._req_ended:
            self._down(self.down.reset, ErrorCode.NO_ERROR)
        self._finish(status)

    def _upstream_reset(self, code: int) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.reset(self._sid, code)

    def _finish(self, status: Status) -> None:
        if self._finished:
            return
        self._finished = True
        self._status = status
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        # give back credit for request data that will never be forwarded
        pending = sum(item[1] for item in self._req if isinstance(item, tuple))
        self._req.clear()
        if pending:
            self._down(self.down.ack, pending)
        self._wake_req()
        self._wake_resp()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.handler.calls.discard(self)
        self.handler.metrics.finished(self.function_id, status, time.monotonic() - self.started)

    @staticmethod
    def _down(method: Callable[..., object], *args: object) -> None:
        """A synchronous call on the client side that may find the client gone: it is
        made from upstream callbacks and timers, where an exception must not escape."""
        try:
            method(*args)
        except Exception:
            pass

    def _wake_req(self) -> None:
        fut, self._req_wake = self._req_wake, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake_resp(self) -> None:
        fut, self._resp_wake = self._resp_wake, None
        if fut is not None and not fut.done():
            fut.set_result(None)


class _Sink:
    """Adapts the upstream connection's StreamSink calls to the call's methods."""

    __slots__ = ("on_data", "on_lost", "on_reset", "on_response", "on_trailers")

    def __init__(self, call: GrpcCall) -> None:
        self.on_response = call.on_response
        self.on_data = call.on_data_up
        self.on_trailers = call.on_trailers_up
        self.on_reset = call.on_reset_up
        self.on_lost = call.on_lost
