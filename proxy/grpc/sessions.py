"""gRPC sessions on the gRPC port, as NVCF's gRPC proxy routes them (spec part 2, section 7).

The routing unit is (client connection, `function-id`, `function-version-id` as sent):
the first call on that triple opens a session, which holds one slot of one instance
(as an NVCF worker gives a session one of its `maxRequestConcurrency`), and every later
call on the triple goes to that instance without taking another slot. Another function
on the same connection opens a second session.

- Response metadata: `nvcf-reqid: <session id>` on every response, and
  `set-cookie: nvcf-request-id=<session id>` on the first response of each connection
  attached to the session. The instance gets `nvcf-reqid: <session id>` too.
- Reconnect: a call on a triple that has no session yet presents a session id in
  `nvcf-reqid`, else in `sec-websocket-protocol` (`nvcf-reqid.<id>`), else in the cookie
  `nvcf-request-id` (a value that is not a UUID is ignored). The session must be known
  to this gateway process and match the function, the version when one is sent, and the
  caller's account; it then gets this connection as well (several at once are fine).
  Unknown: NOT_FOUND `no existing session found for request id …` with the cookie
  cleared; a mismatch: INTERNAL (NVCF's errors carry no code). Reconnects skip the rate
  limit, which a new session checks (account tier, as NVCF's gRPC proxy).
- Timeouts: a session waits at most `start_timeout` (30 s, NVCF's consts.Timeout) for a
  slot, then DEADLINE_EXCEEDED `failed to establish link to worker`. A connection stays
  attached while it is open and has had a call of the session within `idle_timeout`
  (30 s, NVCF's tunnel idle timeout); once no connection is attached, the session waits
  `reconnect_grace` (30 s, NVCF's worker reconnect wait) for a reconnect, then ends and
  frees its slot. A session whose instance left the routing table or cannot be reached
  ends at once; its connection's next call opens a new session (the first call of a
  session that never reached its instance tries another one, once).
- Bounded: at most `max_sessions` per gateway process (RESOURCE_EXHAUSTED beyond). The
  state lives in the process: no store call per call.

The key is checked on every call (NVCF checks it at session start only), from the
routing snapshot as for every call.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from fngate.proxy.errors import NotFound, PollTimeout, ProxyError, RateLimited, UpstreamUnavailable, WrongProtocol
from fngate.proxy.grpc.cors import error_fields
from fngate.proxy.grpc.metrics import GrpcMetrics
from fngate.proxy.grpc.route import resolve_call, target_from

if TYPE_CHECKING:
    from fngate.proxy.routing.lookup import KeyChecker
    from fngate.proxy.routing.rate_limits import RateLimits
    from fngate.proxy.routing.slots import Lease, Slots
    from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, RoutingTable, VersionRoute

Headers = list[tuple[bytes, bytes]]

COOKIE = "nvcf-request-id"
# request headers a session call reads besides the routing ones (proxy/grpc/relay.py _ROUTING)
SESSION_HEADERS = frozenset({b"nvcf-reqid", b"cookie", b"sec-websocket-protocol"})
_CLEAR_COOKIE = ((b"set-cookie", b"nvcf-request-id=; Max-Age=0"),)


class SessionNotFound(NotFound):
    """NOT_FOUND, and the cookie cleared: the client should drop the id and start over."""


class SessionMismatch(ProxyError):
    http_status, grpc_status = 500, 13  # INTERNAL: NVCF's mismatch errors carry no code


class WorkerLinkTimeout(ProxyError):
    http_status, grpc_status = 504, 4  # DEADLINE_EXCEEDED


class TooManySessions(ProxyError):
    http_status, grpc_status = 429, 8  # RESOURCE_EXHAUSTED


def add_session_field(meta: dict[str, str], name: str, value: str) -> None:
    """Collect a session field into `meta`: HTTP/2 may split `cookie` into several
    fields (RFC 9113 8.2.3), and a list field may come as several lines."""
    had = meta.get(name)
    meta[name] = value if had is None else f"{had}{'; ' if name == 'cookie' else ', '}{value}"


def requested_session(meta: Mapping[str, str]) -> str | None:
    """The session id a call presents (header, then WebSocket protocol pair, then cookie),
    as a lower-case UUID; None when absent or not a UUID."""
    value = meta.get("nvcf-reqid")
    if not value:
        for item in meta.get("sec-websocket-protocol", "").split(","):
            name, dot, rest = item.strip().partition(".")
            if dot and name == "nvcf-reqid":
                value = rest
                break
    if not value:
        for item in meta.get("cookie", "").split(";"):
            name, eq, rest = item.strip().partition("=")
            if eq and name == COOKIE:
                value = rest
                break
    if not value:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


class Attachment:
    """One client connection's tie to a session (NVCF: one worker tunnel)."""

    __slots__ = ("attached_at", "conn", "cookie_due", "idle_since", "in_flight", "key", "session")

    def __init__(self, session: Session, conn: weakref.ref[object], key: tuple[int, str, str], now: float) -> None:
        self.session = session
        self.conn = conn
        self.key = key
        self.in_flight = 0
        self.idle_since = self.attached_at = now
        self.cookie_due = True  # the first response through this connection sets the cookie

    def gone(self) -> bool:
        conn = self.conn()
        return conn is None or bool(getattr(conn, "closed", False))


class Session:
    __slots__ = (
        "attachments",
        "calls",
        "detached_since",
        "due",
        "ended",
        "function_id",
        "id",
        "lease",
        "nca_id",
        "opened_at",
        "ready",
        "rid",
        "start_task",
        "timer",
        "version_id",
    )

    def __init__(self, sid: str, route: VersionRoute, nca_id: str) -> None:
        self.id = sid
        self.rid = sid.encode()
        self.function_id = route.function_id
        self.version_id = route.version_id
        self.nca_id = nca_id
        self.lease: Lease | None = None  # None while the session waits for its slot
        self.ready: asyncio.Future[None] | None = None  # the start, while it waits
        self.start_task: asyncio.Task[None] | None = None
        self.attachments: dict[tuple[int, str, str], Attachment] = {}
        self.calls = 0
        self.detached_since: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0.0
        self.ended = False
        self.opened_at = time.monotonic()  # then: when it got its slot


class SeatLease:
    """What a call in a session holds instead of a slot: the session's instance."""

    __slots__ = ("endpoint", "released", "seat")

    def __init__(self, seat: Seat, endpoint: Endpoint) -> None:
        self.seat = seat
        self.endpoint = endpoint
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.seat.sessions.call_left(self.seat.attachment)


class Seat:
    """One call's place in a session; the call asks it for its slot as it would ask the
    limiter (the relay's Slots protocol)."""

    __slots__ = ("attachment", "new", "request_id", "response_headers", "sessions")

    def __init__(self, sessions: GrpcSessions, attachment: Attachment, new: bool) -> None:
        self.sessions = sessions
        self.attachment = attachment
        self.new = new  # the call opened the session (counted as a function request)
        session = attachment.session
        self.request_id = session.rid
        self.response_headers: Headers = []
        if attachment.cookie_due:
            attachment.cookie_due = False
            self.response_headers.append((b"set-cookie", b"%s=%s" % (COOKIE.encode(), session.rid)))

    def try_acquire(self, route: VersionRoute, exclude: str | None = None, owner: object = None) -> SeatLease | None:
        session = self.attachment.session
        if exclude is not None or session.lease is None or session.ended:
            return None  # a retry (exclude: the session's instance failed) goes through admit
        return self._take(session.lease.endpoint)

    async def admit(
        self,
        route: VersionRoute,
        deadline: float | None,
        request_id: str = "",
        exclude: str | None = None,
        *,
        owner: object = None,
        pin: str | None = None,  # unused: a session is pinned to its instance already
    ) -> SeatLease:
        session = self.attachment.session
        if exclude is not None:  # the session's instance could not be reached
            await self.sessions.instance_lost(session, route, exclude, owner)
        elif session.lease is None and session.ready is not None:
            await asyncio.shield(session.ready)  # the start's error, if it failed
        if session.ended or session.lease is None:
            raise UpstreamUnavailable("the gRPC session ended")
        return self._take(session.lease.endpoint)

    def _take(self, endpoint: Endpoint) -> SeatLease:
        attachment = self.attachment
        attachment.in_flight += 1
        attachment.session.calls += 1
        return SeatLease(self, endpoint)


class GrpcSessions:
    """The gateway process's gRPC sessions: by id, and by (connection, function, version)."""

    def __init__(
        self,
        slots: Slots,
        metrics: GrpcMetrics | None = None,
        *,
        start_timeout: float = 30.0,
        idle_timeout: float = 30.0,
        reconnect_grace: float = 30.0,
        max_sessions: int = 65536,
    ) -> None:
        self.slots = slots
        self.metrics = metrics if metrics is not None else GrpcMetrics()
        self.start_timeout = start_timeout
        self.idle_timeout = idle_timeout
        self.reconnect_grace = reconnect_grace
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}
        self._attached: dict[tuple[int, str, str], Attachment] = {}

    # -- routing a call ------------------------------------------------------------------
    def route(
        self,
        table: RoutingTable,
        meta: Mapping[str, str],
        keys: KeyChecker,
        rate_limits: RateLimits | None,
        conn: object,
        owner: object,
    ) -> tuple[VersionRoute, KeyGrant, Seat]:
        """The call's version, its caller's grant and its seat in a session (joined,
        resumed or opened); raises the call's ProxyError."""
        function_id, sent_version = target_from(meta.get("function-id"), meta.get("function-version-id"), meta.get(":authority"))
        authorization = meta.get("authorization")
        grant = keys.check(table, None if authorization is None else authorization.encode("latin-1"), function_id, sent_version)
        key = (id(conn), function_id, sent_version or "")
        attachment = self._attached.get(key)
        if attachment is not None:
            if attachment.conn() is conn:
                if attachment.session.nca_id != grant.nca_id:  # stricter than NVCF, which re-checks nothing here
                    raise SessionMismatch(f"existing session invoker NCA ID mismatch for request id {attachment.session.id}")
                route = self._current(table, attachment.session)
                if route is not None:
                    return route, grant, Seat(self, attachment, False)
                self.end(attachment.session, "deleted")  # its instance or version is gone: a new session, as NVCF
            else:
                self._detach(attachment)  # a connection that reused the id of a closed one
        wanted = requested_session(meta)
        if wanted is not None:
            return self._resume(table, wanted, function_id, sent_version, grant, conn, key)
        route = resolve_call(table, function_id, sent_version, grant)
        if not route.grpc:
            raise WrongProtocol(f"function {function_id} is not a gRPC function")
        if len(self.sessions) >= self.max_sessions:  # before the rate limit spends a token
            raise TooManySessions(f"this gateway holds {self.max_sessions} gRPC sessions")
        if rate_limits is not None and route.rate_limit:
            try:
                rate_limits.check(route, grant, callers=False)
            except RateLimited:
                raise RateLimited("exceeded rate limit") from None  # NVCF's grpc-message
        session = Session(str(uuid.uuid4()), route, grant.nca_id)
        self.sessions[session.id] = session
        attachment = self._attach(session, conn, key)
        lease = self.slots.try_acquire(route, None, owner)
        if lease is not None:
            self._opened(session, lease, False)
        else:
            loop = asyncio.get_running_loop()
            session.ready = loop.create_future()
            session.ready.add_done_callback(_retrieved)
            session.start_task = loop.create_task(self._start(session, route, owner))
        return route, grant, Seat(self, attachment, True)

    def _resume(
        self,
        table: RoutingTable,
        wanted: str,
        function_id: str,
        sent_version: str | None,
        grant: KeyGrant,
        conn: object,
        key: tuple[int, str, str],
    ) -> tuple[VersionRoute, KeyGrant, Seat]:
        began = time.monotonic()
        session = self.sessions.get(wanted)
        if session is None or session.ended:
            raise SessionNotFound(f"no existing session found for request id {wanted}", _CLEAR_COOKIE)
        if session.function_id != function_id:
            raise SessionMismatch(f"existing session function ID mismatch for request id {wanted}")
        if sent_version is not None and session.version_id != sent_version:
            raise SessionMismatch(f"existing session function version ID mismatch for request id {wanted}")
        if session.nca_id != grant.nca_id:
            raise SessionMismatch(f"existing session invoker NCA ID mismatch for request id {wanted}")
        route = self._current(table, session)
        if route is None:
            self.end(session, "deleted")
            raise SessionNotFound(f"no existing session found for request id {wanted}", _CLEAR_COOKIE)
        attachment = self._attach(session, conn, key)
        self.metrics.session_init[True].observe(attachment.attached_at - began)
        return route, grant, Seat(self, attachment, False)

    def _current(self, table: RoutingTable, session: Session) -> VersionRoute | None:
        """The session's version as the snapshot has it now; None when the session cannot
        go on (ended, the version not invokable, its instance no longer listed)."""
        if session.ended:
            return None
        route = table.functions.get(session.function_id, {}).get(session.version_id)
        if route is None or not route.invokable:
            return None
        lease = session.lease
        if lease is not None and all(ep.id != lease.endpoint.id for ep in route.endpoints):
            return None
        return route

    # -- starting ------------------------------------------------------------------------
    async def _start(self, session: Session, route: VersionRoute, owner: object) -> None:
        """Wait for the session's slot, for every call waiting on it."""
        ready = session.ready
        assert ready is not None  # set with the task
        try:
            lease = await self.slots.admit(route, time.monotonic() + self.start_timeout, session.id, owner=owner)
        except PollTimeout:
            self._start_failed(session, WorkerLinkTimeout("failed to establish link to worker"))
            return
        except ProxyError as err:
            self._start_failed(session, err)
            return
        except asyncio.CancelledError:  # the session ended first (its version left, the gateway stops)
            self._start_failed(session, UpstreamUnavailable("the gRPC session ended before it had an instance"))
            raise
        if session.ended:
            lease.release()
            return
        self._opened(session, lease, False)
        session.ready = session.start_task = None
        if not ready.done():
            ready.set_result(None)
        self._check(session)  # nobody may be left to use it

    def _start_failed(self, session: Session, err: ProxyError) -> None:
        ready = session.ready
        self.end(session)
        if ready is not None and not ready.done():
            ready.set_exception(err)

    async def instance_lost(self, session: Session, route: VersionRoute, exclude: str, owner: object) -> None:
        """The session's instance could not be reached. A session no call got through on
        yet takes a slot on another instance (once); any other ends."""
        lease = session.lease
        if session.calls != 1 or lease is None or lease.endpoint.id != exclude or session.ended:
            self.end(session, "worker_closed")
            raise UpstreamUnavailable(f"instance unreachable: the gRPC session's instance {exclude}")
        session.lease = None
        lease.release()
        self.metrics.worker_connection_closed("worker_closed", time.monotonic() - session.opened_at)
        session.opened_at = time.monotonic()
        try:
            lease = await self.slots.admit(route, time.monotonic() + self.start_timeout, session.id, exclude, owner=owner)
        except PollTimeout:
            self.end(session)
            raise WorkerLinkTimeout("failed to establish link to worker") from None
        except BaseException:
            self.end(session)
            raise
        if session.ended:
            lease.release()
            raise UpstreamUnavailable("the gRPC session ended")
        self._opened(session, lease, False)
        session.calls = 0  # the retrying call counts once more as it takes its seat

    def _opened(self, session: Session, lease: Lease, reconnect: bool) -> None:
        """The session holds its instance's slot (NVCF: its worker tunnel is up)."""
        session.lease = lease
        now = time.monotonic()
        metrics = self.metrics
        metrics.session_init[reconnect].observe(now - session.opened_at)
        metrics.worker_opened += 1
        session.opened_at = now

    # -- attachments and the end ---------------------------------------------------------
    def _attach(self, session: Session, conn: object, key: tuple[int, str, str]) -> Attachment:
        ref = weakref.ref(conn, partial(self._conn_collected, session))
        attachment = Attachment(session, ref, key, time.monotonic())
        session.attachments[key] = attachment
        session.detached_since = None
        self._attached[key] = attachment
        self.metrics.client_opened += 1
        self._arm(session, attachment.idle_since + self.idle_timeout)
        return attachment

    def _conn_collected(self, session: Session, _ref: weakref.ref[object]) -> None:
        try:
            asyncio.get_running_loop().call_soon(self._check, session)
        except RuntimeError:  # collected outside the loop (at exit)
            pass

    def _detach(self, attachment: Attachment) -> None:
        session = attachment.session
        if session.attachments.pop(attachment.key, None) is not None:
            now = time.monotonic()
            self.metrics.client_connection_closed(now - attachment.attached_at)
            if not session.attachments:
                session.detached_since = now
                self._arm(session, now + self.reconnect_grace)
        if self._attached.get(attachment.key) is attachment:
            del self._attached[attachment.key]

    def call_left(self, attachment: Attachment) -> None:
        """A call of the session ended (its SeatLease released)."""
        attachment.in_flight -= 1
        if attachment.in_flight:
            return
        attachment.idle_since = now = time.monotonic()
        session = attachment.session
        if attachment.gone():
            self._check(session)
        else:
            self._arm(session, now + self.idle_timeout)

    def _arm(self, session: Session, due: float) -> None:
        """One timer per session; it re-checks when it fires, so a later due time needs no
        new timer while an earlier one is pending."""
        if session.ended:
            return
        if session.timer is not None:
            if session.due <= due:
                return
            session.timer.cancel()
        session.due = due
        session.timer = asyncio.get_running_loop().call_later(max(due - time.monotonic(), 0.0), self._fire, session)

    def _fire(self, session: Session) -> None:
        session.timer = None
        self._check(session)

    def _check(self, session: Session) -> None:
        """Detach closed and idle connections; end the session once none has been attached
        for `reconnect_grace`; re-arm for what is due next."""
        if session.ended:
            return
        now = time.monotonic()
        next_due: float | None = None
        for attachment in list(session.attachments.values()):
            if attachment.in_flight:
                continue  # its calls end first (a closed connection resets them)
            due = attachment.idle_since + self.idle_timeout
            if attachment.gone() or now >= due:
                self._detach(attachment)
            elif next_due is None or due < next_due:
                next_due = due
        if not session.attachments:
            if session.lease is None and session.ready is not None:
                next_due = now + self.idle_timeout  # still starting: look again once it has
            else:
                since = session.detached_since if session.detached_since is not None else now
                session.detached_since = since
                due = since + self.reconnect_grace
                if now >= due:
                    self.end(session, "client_closed")
                    return
                next_due = due if next_due is None else min(next_due, due)
        if next_due is not None:
            self._arm(session, next_due)

    def end(self, session: Session, reason: str = "unknown") -> None:
        """End the session: free its slot, forget its id and connections; `reason`: one
        of NVCF's worker_connection_closed_total reasons (proxy/grpc/metrics.py)."""
        if session.ended:
            return
        session.ended = True
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        for attachment in list(session.attachments.values()):
            self._detach(attachment)
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        lease, session.lease = session.lease, None
        if lease is not None:
            lease.release()
            self.metrics.worker_connection_closed(reason, time.monotonic() - session.opened_at)
        task, session.start_task = session.start_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def error_headers(self, request_headers: Headers, exc: BaseException) -> Headers:
        """The fields of a gateway error answer on the gRPC port: CORS as NVCF's gRPC proxy
        (proxy/grpc/cors.py), and the error's own (the cleared session cookie)."""
        return [*error_fields(request_headers), *getattr(exc, "headers", ())]

    def close(self) -> None:
        """End every session (the gateway stops)."""
        for session in list(self.sessions.values()):
            self.end(session, "shutdown")


def _retrieved(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # a start that failed with no call left to hear it is not an asyncio warning


class SessionPort:
    """The gRPC handler the gRPC port's connections get: the relay's, with sessions."""

    __slots__ = ("handler", "sessions")

    def __init__(self, handler: SessionCalls, sessions: GrpcSessions) -> None:
        self.handler = handler
        self.sessions = sessions

    def open(self, headers: Headers, downstream: Any, end_stream: bool = False) -> object:
        return self.handler.open(headers, downstream, end_stream, self.sessions)


class SessionCalls(Protocol):
    def open(self, headers: Headers, downstream: Any, end_stream: bool = False, sessions: GrpcSessions | None = None) -> object: ...
