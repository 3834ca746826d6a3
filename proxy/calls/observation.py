"""What one call tells its observers (traces, the access log), and the gateway-wide
Observers that turn it into spans and log lines.

Nothing here runs unless `--otlp-endpoint` or `--access-log` is set: the engine's
`observers` is then None, and the call and the gRPC relay make one attribute check at
each hook (`if obs is not None`) and nothing more: no record, no span, no context.

A call's record is marked at its phases, all on the event loop and cheap (a clock
read, an addition): begin (routed and authenticated), slot (a place at an instance),
sent (the request is on its way: the trace context the instance gets is made here),
head (the instance's first byte), body bytes, end. At the end the record goes to
the tracer (spans with the marked times; the SDK's batch processor exports them on
its own thread) and to the access log (one tuple into a bounded buffer that a thread
writes out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from fngate.proxy.calls.exchange import Exchange
    from fngate.proxy.calls.tracing import CallTrace, Tracing
    from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, VersionRoute

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
Attributes = dict[str, str | int]

# the access log's fields, in order (proxy/ops/access_log.py writes them as JSON keys)
FIELDS = (
    "time",
    "request_id",
    "function_id",
    "version_id",
    "key_id",
    "client",
    "protocol",
    "status",
    "bytes_in",
    "bytes_out",
    "queue_seconds",
    "instance_seconds",
    "total_seconds",
    "http_status",
    "grpc_code",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)
# `status`: the HTTP status, or on a gRPC line the call's grpc-status (its number; `grpc_code`
# its name, None on HTTP lines); `http_status`: the HTTP status the gateway counts the call
# under in its metrics (for gRPC: 200 when the instance ended the call, the error's HTTP
# equivalent when the gateway did, 499 for a client that went away); the token counts: the
# usage an LLM gateway call's instance reported (proxy/llm/usage.py; Responses' input and
# output tokens count as prompt and completion), None on other lines and on an LLM call
# whose instance reported none
AccessEntry = tuple[
    float, str, str, str, str, str, str, int, int, int, float, float, float, int, str | None, int | None, int | None, int | None
]
Usage = tuple[int, int]  # (prompt, completion) tokens
NO_TOKENS = (None, None, None)


class AccessSink(Protocol):
    """Where finished calls' access log entries go (proxy/ops/access_log.py): `put`
    never blocks and never fails; a full buffer drops the entry and counts it."""

    def put(self, entry: AccessEntry) -> None: ...


class CallRecord:
    """The marks of one call (monotonic seconds; 0.0: not reached)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client",
        "function_id",
        "grpc_code",
        "grpc_status",
        "head_at",
        "key_id",
        "owner",
        "protocol",
        "request_id",
        "routed_at",
        "sent_at",
        "slot_at",
        "started",
        "trace",
        "usage",
        "version_id",
        "wall",
    )

    def __init__(self, owner: Observers, protocol: str, request_id: bytes, started: float, client: str) -> None:
        self.owner = owner
        self.protocol = protocol
        self.request_id = request_id
        self.started = started  # time.monotonic() at the request head
        self.wall = time.time() - (time.monotonic() - started)  # the same instant on the wall clock
        self.client = client
        self.trace: CallTrace | None = None
        self.function_id = ""
        self.version_id = ""
        self.key_id = ""
        self.routed_at = 0.0
        self.slot_at = 0.0
        self.sent_at = 0.0
        self.head_at = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.grpc_status = -1  # the grpc-status a gRPC call ended with (-1: not gRPC, or not ended)
        self.grpc_code: str | None = None  # ... its name
        # an LLM call's token usage, asked for once at its end (the LLM gateway sets it)
        self.usage: Callable[[], Usage | None] | None = None

    def routed(self, route: VersionRoute, grant: KeyGrant) -> None:
        """Routing and the key check passed (ids from the routing snapshot, never from the request)."""
        self.routed_at = time.monotonic()
        self.function_id = route.function_id
        self.version_id = route.version_id
        self.key_id = grant.key_id

    def slot(self) -> None:
        """A place at an instance is held (the queue wait ends; a connect may follow)."""
        self.slot_at = time.monotonic()

    def sent(self, headers: Headers, endpoint: Endpoint | None = None) -> Headers:
        """The request goes to `endpoint` now: the headers it carries (the trace context
        of the gateway's span replaces the client's)."""
        now = self.sent_at = time.monotonic()
        if not self.slot_at:
            self.slot_at = now  # a free slot and an idle connection: no wait, no connect
        trace = self.trace
        if trace is None:
            return headers
        try:
            return trace.sent(self, headers, endpoint)
        except Exception as exc:  # a tracing fault never fails the request: it goes on untraced
            log.debug("trace context not made: %r", exc)
            self.trace = None
            return headers

    def head(self) -> None:
        if not self.head_at:
            self.head_at = time.monotonic()

    def end(self, status: int, bytes_in: int) -> None:
        """The call is over: spans and the access log entry go out."""
        self.owner.end(self, status, bytes_in)

    def end_grpc(self, grpc_status: int, grpc_code: str, http_status: int, bytes_in: int) -> None:
        """A gRPC call is over with `grpc_status` (named `grpc_code`); `http_status`: the
        HTTP status its metrics count it under."""
        self.grpc_status = grpc_status
        self.grpc_code = grpc_code
        self.owner.end(self, http_status, bytes_in)

    def wall_ns(self, at: float) -> int:
        """Monotonic seconds `at` as wall-clock nanoseconds (what spans carry)."""
        return int((self.wall + (at - self.started)) * 1e9)


class Observers:
    """The gateway's tracer and access log (either may be None, not both)."""

    __slots__ = ("access_log", "tracing")

    def __init__(self, tracing: Tracing | None, access_log: AccessSink | None) -> None:
        self.tracing = tracing
        self.access_log = access_log

    def begin(
        self,
        protocol: str,
        request_id: bytes,
        started: float,
        headers: Headers,
        client: str,
        attributes: Callable[[], Attributes] | None = None,
    ) -> CallRecord:
        """A record for a request whose head arrived at `started` (monotonic); `attributes`:
        its root span's semantic-convention attributes (asked for only when traced)."""
        rec = CallRecord(self, protocol, request_id, started, client)
        tracing = self.tracing
        if tracing is not None:
            try:
                rec.trace = tracing.begin(headers, rec.wall_ns(started), protocol, None if attributes is None else attributes())
            except Exception as exc:  # the request goes on untraced
                log.debug("trace not started: %r", exc)
        return rec

    def begin_call(self, ex: Exchange, route: VersionRoute | None, grant: KeyGrant | None, request_id: bytes, started: float) -> CallRecord:
        """An HTTP call, routed and authenticated (proxy/calls/call.py)."""
        rec = self.begin(protocol_of(ex.http2), request_id, started, ex.headers, ex.client_addr, lambda: _http_attributes(ex))
        if route is not None and grant is not None:
            rec.routed(route, grant)
        return rec

    def begin_grpc(self, headers: Headers, connection: object, request_id: bytes, started: float) -> CallRecord:
        """A gRPC call, before its routing (proxy/grpc/relay.py marks `routed`)."""
        client = str(getattr(connection, "client_addr", ""))
        return self.begin("grpc", request_id, started, headers, client, lambda: _grpc_attributes(headers, client))

    def end(self, rec: CallRecord, status: int, bytes_in: int) -> None:
        """`status`: the HTTP status (for gRPC, the HTTP equivalent: rec.grpc_status is the call's)."""
        now = time.monotonic()
        rec.bytes_in = bytes_in
        trace = rec.trace
        if trace is not None:
            try:
                trace.end(rec, status, now)
            except Exception as exc:  # never into the call's ending
                log.debug("spans not recorded: %r", exc)
        sink = self.access_log
        if sink is not None:
            sent = rec.sent_at
            queued = (rec.slot_at - rec.routed_at) if rec.slot_at and rec.routed_at else 0.0
            instance = (now - sent) if sent else 0.0
            tokens: tuple[int | None, int | None, int | None] = NO_TOKENS
            if rec.usage is not None:
                try:
                    used = rec.usage()
                except Exception as exc:  # never into the call's ending
                    log.debug("token usage not read: %r", exc)
                    used = None
                if used is not None:
                    tokens = (used[0], used[1], used[0] + used[1])
            sink.put(
                (
                    rec.wall,
                    rec.request_id.decode(),
                    rec.function_id,
                    rec.version_id,
                    rec.key_id,
                    rec.client,
                    rec.protocol,
                    status if rec.grpc_code is None else rec.grpc_status,
                    bytes_in,
                    rec.bytes_out,
                    queued,
                    instance,
                    now - rec.started,
                    status,
                    rec.grpc_code,
                    *tokens,
                )
            )

    def answered(
        self,
        protocol: str,
        request_id: bytes,
        started: float,
        client: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        function_id: str = "",
        version_id: str = "",
        key_id: str = "",
        http_status: int = 0,
        grpc_code: str | None = None,
    ) -> None:
        """The access log line of a request the gateway answered itself, with no call
        (no spans: health checks and preflights would drown the traces)."""
        sink = self.access_log
        if sink is None:
            return
        now = time.monotonic()
        sink.put(
            (
                time.time() - (now - started),
                request_id.decode(),
                function_id,
                version_id,
                key_id,
                client,
                protocol,
                status,
                bytes_in,
                bytes_out,
                0.0,
                0.0,
                now - started,
                http_status or status,
                grpc_code,
                *NO_TOKENS,
            )
        )

    def own(self, ex: Exchange, request_id: bytes, started: float, status: int) -> None:
        """The line of a request answered through `metered(ex)` (anything else: none)."""
        if not isinstance(ex, Metered):
            return
        inner = ex.ex
        self.answered(
            protocol_of(inner.http2),
            ex.request_id or request_id,
            started,
            inner.client_addr,
            status,
            inner.body.received,
            ex.sent,
            ex.function_id,
            ex.version_id,
            ex.key_id,
        )

    def refused(self, ex: Exchange, request_id: bytes, started: float, status: int, bytes_out: int = 0) -> None:
        """An HTTP request the gateway answered before it was routed (no key, an unknown
        function...) with `bytes_out` body bytes of its own."""
        rec = self.begin_call(ex, None, None, request_id, started)
        rec.bytes_out = bytes_out
        self.end(rec, status, ex.body.received)


class Metered:
    """An exchange the gateway answers itself (a health check, a CORS preflight, a pexec
    status poll, a large result), as that answer sees it: every use goes to the driver's
    exchange, and the body bytes sent are counted (the access log's bytes_out). What the
    answer learns of the request (a poll's request, function and key) is noted here for
    its line. Made only while an observer is on (`metered`): with both off, nothing."""

    __slots__ = ("ex", "function_id", "key_id", "request_id", "sent", "version_id")

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.sent = 0
        self.request_id: bytes | None = None
        self.function_id = self.version_id = self.key_id = ""

    def __getattr__(self, name: str) -> object:  # what is not its own: the exchange's
        return getattr(self.ex, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name in Metered.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self.ex, name, value)  # on_disconnect, extra_headers: the driver's to use

    def send(self, data: bytes) -> None:
        self.sent += len(data)
        self.ex.send(data)

    def noted(self, request_id: bytes, function_id: str, version_id: str, key_id: str) -> None:
        self.request_id = request_id
        self.function_id = function_id
        self.version_id = version_id
        self.key_id = key_id


def metered(ex: Exchange) -> Exchange:
    """`ex` counted (only called while an observer is on)."""
    return cast("Exchange", Metered(ex))


def note(ex: Exchange, request_id: bytes, function_id: str, version_id: str, key_id: str) -> None:
    """What a gateway-answered request turned out to concern (nothing when not metered)."""
    if isinstance(ex, Metered):
        ex.noted(request_id, function_id, version_id, key_id)


def _http_attributes(ex: Exchange) -> Attributes:
    from fngate.proxy.calls.tracing import server_attributes  # (loaded only with tracing on)

    return server_attributes(ex.method, ex.target, ex.authority, ex.client_addr, ex.http2, ex.scheme)


def _grpc_attributes(headers: Headers, client: str) -> Attributes:
    from fngate.proxy.calls.tracing import grpc_attributes

    return grpc_attributes(headers, client)


def protocol_of(http2: bool) -> str:
    return "h2" if http2 else "http/1.1"
