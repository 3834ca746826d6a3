"""Per-instance concurrency slots, least-loaded choice and the bounded per-version FIFO.

Each instance takes at most `maxRequestConcurrency` requests at once. `admit` picks
the less loaded of two random instances with a free slot (power of two choices);
when none is free, or none is ready yet (cold start), the request waits in its
version's FIFO until a slot is released or a new routing snapshot brings instances.
In-flight counts are keyed by endpoint id, so they survive new snapshots.

`admit(route, deadline)` is also the Admit of the gRPC relay (proxy/grpc/relay.py).

Per client connection, at most `per_connection` requests hold a slot at once (an
HTTP/2 connection multiplexes many): one client cannot take every slot of a function
over one connection. A request over the cap waits, in its connection's own FIFO and
within its deadline, for one of that connection's requests to end; other connections'
requests are not held up by it. Callers pass the connection as `owner` (None: not
counted, e.g. HTTP/1.1, which answers one request at a time).

A request may be pinned to one instance (`admit(..., pin=endpoint id)`: the LLM gateway's
sticky sessions, whose instance holds the conversation's cache). Queued, it waits for a
slot on ITS instance while it is live, and is not dispatched to another one; requests
behind it that can go anywhere are not held up by it. Without pinned waiters the queue
is the plain FIFO (the dispatch loop stops at the first waiter that finds no slot).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from itertools import islice
from time import monotonic  # (per request: no module attribute lookup)
from time import time as wall_clock

from fngate.proxy.errors import PollTimeout, QueueFull
from fngate.proxy.routing.snapshot import Endpoint, RoutingTable, SnapshotHolder, VersionLoad, VersionRoute

_RETRY_AFTER = ((b"retry-after", b"1"),)


class Lease:
    """One slot on one instance, held until `release()` (idempotent)."""

    __slots__ = ("endpoint", "limiter", "released", "share", "started", "state")

    def __init__(self, endpoint: Endpoint, state: VersionState, limiter: Limiter) -> None:
        self.endpoint = endpoint
        self.state = state
        self.limiter = limiter
        self.started = monotonic()
        self.released = False
        self.share: ConnectionShare | None = None  # the client connection's count it is part of

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter._release(self)


class _Waiter:
    __slots__ = ("exclude", "future", "pinned", "request_id", "timer")

    def __init__(self, future: asyncio.Future[Lease], request_id: str, exclude: str | None, pinned: str | None = None) -> None:
        self.future = future
        self.request_id = request_id
        self.exclude = exclude
        self.pinned = pinned  # the only instance it may take a slot on (while that one is live)
        self.timer: asyncio.TimerHandle | None = None


class ConnectionShare:
    """The slots one client connection holds (`held`, reservations included) and its
    requests waiting for a turn under the per-connection cap."""

    __slots__ = ("held", "owner", "waiters")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.held = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class VersionState:
    """Live accounting of one function version (survives snapshots)."""

    __slots__ = ("busy_seconds", "endpoints", "function_id", "in_flight", "last_request_at", "pinned", "queue", "requests", "version_id")

    def __init__(self, function_id: str, version_id: str) -> None:
        self.function_id = function_id
        self.version_id = version_id
        self.queue: deque[_Waiter] = deque()
        self.in_flight = 0
        self.busy_seconds = 0.0
        self.requests = 0
        self.last_request_at = 0.0
        self.pinned = 0  # queued waiters pinned to one instance
        # the instances it was granted slots on: a report names the busy ones even after
        # they left the routing table (a drain waits for them), pruned at each report
        self.endpoints: set[str] = set()


class Limiter:
    __slots__ = ("_shares", "_task", "holder", "in_flight", "per_connection", "versions")

    def __init__(self, holder: SnapshotHolder, per_connection: int = 0) -> None:
        self.holder = holder
        self.in_flight: dict[str, int] = {}  # endpoint id -> requests holding a slot
        self.versions: dict[str, VersionState] = {}
        self._task: asyncio.Task[None] | None = None
        self.per_connection = per_connection  # slots one client connection may hold; 0: no cap
        self._shares: dict[object, ConnectionShare] = {}  # owner -> its share, while it holds or waits

    # -- admission ------------------------------------------------------------------------
    def _state(self, route: VersionRoute) -> VersionState:
        st = self.versions.get(route.version_id)
        if st is None:
            st = self.versions[route.version_id] = VersionState(route.function_id, route.version_id)
        return st

    def _pick(self, route: VersionRoute, exclude: str | None) -> Endpoint | None:
        limit = route.max_concurrency if route.max_concurrency > 0 else 1
        inflight = self.in_flight
        endpoints = route.endpoints
        if len(endpoints) == 1:  # the common case, without a list per request
            e = endpoints[0]
            if not e.draining and e.id != exclude and inflight.get(e.id, 0) < limit:
                return e
            return self._pick(route, None) if exclude is not None else None
        free = [e for e in endpoints if not e.draining and e.id != exclude and inflight.get(e.id, 0) < limit]
        if not free:
            if exclude is not None:  # a retry may fall back to the same instance
                return self._pick(route, None)
            return None
        if len(free) == 1:
            return free[0]
        a, b = random.sample(free, 2)
        return a if inflight.get(a.id, 0) <= inflight.get(b.id, 0) else b

    def _grant(self, endpoint: Endpoint, st: VersionState) -> Lease:
        self.in_flight[endpoint.id] = self.in_flight.get(endpoint.id, 0) + 1
        st.endpoints.add(endpoint.id)
        st.in_flight += 1
        st.requests += 1
        st.last_request_at = wall_clock()
        return Lease(endpoint, st, self)

    def try_acquire(self, route: VersionRoute, exclude: str | None = None, owner: object = None) -> Lease | None:
        """A slot now, or None (the caller then waits in `admit`)."""
        share = None
        if owner is not None and self.per_connection:
            share = self._shares.get(owner)
            if share is not None and (share.held >= self.per_connection or share.waiters):
                return None  # the connection's cap: its turn comes in admit
        st = self._state(route)
        if st.queue:  # FIFO: nobody overtakes a waiting request
            return None
        ep = self._pick(route, exclude)
        if ep is None:
            return None
        lease = self._grant(ep, st)
        if owner is not None and self.per_connection:
            if share is None:
                share = self._shares[owner] = ConnectionShare(owner)
            share.held += 1
            lease.share = share
        return lease

    async def admit(
        self,
        route: VersionRoute,
        deadline: float | None,
        request_id: str = "",
        exclude: str | None = None,
        *,
        owner: object = None,
        pin: str | None = None,
    ) -> Lease:
        """A slot for `route`, waiting until `deadline` (time.monotonic): first for a turn
        under the connection's cap (`owner`), then in the version's FIFO."""
        lease = self.try_acquire(route, exclude, owner)
        if lease is not None:
            return lease
        share = None
        if owner is not None and self.per_connection:
            share = self._shares.get(owner)
            if share is None:
                share = self._shares[owner] = ConnectionShare(owner)
            if share.held >= self.per_connection or share.waiters:
                await self._turn(share, deadline)  # counts us in share.held once it returns
            else:
                share.held += 1
        try:
            lease = await self._queued(route, deadline, request_id, exclude, pin)
        except BaseException:
            if share is not None:
                self._leave(share)
            raise
        lease.share = share
        return lease

    async def _queued(
        self, route: VersionRoute, deadline: float | None, request_id: str, exclude: str | None, pin: str | None = None
    ) -> Lease:
        st = self._state(route)
        if not st.queue:
            ep = self._pick(route, exclude)
            if ep is not None:
                return self._grant(ep, st)
        if len(st.queue) >= route.queue_limit:
            raise QueueFull(f"The queue of function version '{route.version_id}' is full", _RETRY_AFTER)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), request_id, exclude, pin)
        st.queue.append(waiter)
        if pin is not None:
            st.pinned += 1
        if deadline is not None:
            waiter.timer = loop.call_later(max(deadline - time.monotonic(), 0), self._expire, st, waiter)
        if st.pinned:  # the waiters ahead may all be pinned to busy instances: not a reason to wait
            self._dispatch(st, self.holder.table)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._forget(st, waiter)
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().release()  # granted in the same tick as the cancel
            raise

    # -- the per-connection cap ----------------------------------------------------------
    async def _turn(self, share: ConnectionShare, deadline: float | None) -> None:
        """Wait until the connection holds fewer than `per_connection` slots; `_leave`
        counts the waiter in `share.held` as it wakes it (so nobody overtakes it)."""
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        share.waiters.append(turn)
        timer = None
        if deadline is not None:
            timer = loop.call_later(max(deadline - time.monotonic(), 0), self._turn_expired, share, turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._leave(share)  # woken in the same tick as the cancel: give the turn back
            else:
                self._drop_waiter(share, turn)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _turn_expired(self, share: ConnectionShare, turn: asyncio.Future[None]) -> None:
        if not turn.done():
            self._drop_waiter(share, turn)
            turn.set_exception(PollTimeout("the connection's other requests held its slots for the whole poll window"))

    def _drop_waiter(self, share: ConnectionShare, turn: asyncio.Future[None]) -> None:
        try:
            share.waiters.remove(turn)
        except ValueError:
            pass
        if not share.held and not share.waiters:
            self._shares.pop(share.owner, None)

    def _leave(self, share: ConnectionShare) -> None:
        """One of the connection's slots (or reserved turns) is free: wake the next waiter."""
        share.held -= 1
        waiters = share.waiters
        while waiters and share.held < self.per_connection:
            turn = waiters.popleft()
            if not turn.done():
                share.held += 1
                turn.set_result(None)
        if not share.held and not waiters:
            self._shares.pop(share.owner, None)

    def _expire(self, st: VersionState, waiter: _Waiter) -> None:
        self._forget(st, waiter)
        if not waiter.future.done():
            waiter.future.set_exception(PollTimeout("no instance took the request within the poll window"))

    @staticmethod
    def _forget(st: VersionState, waiter: _Waiter) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        try:
            st.queue.remove(waiter)
        except ValueError:
            return
        if waiter.pinned is not None:
            st.pinned -= 1

    def position(self, version_id: str, request_id: str) -> int | None:
        st = self.versions.get(version_id)
        if st is not None:
            for i, w in enumerate(st.queue):
                if w.request_id == request_id:
                    return i + 1
        return None

    # -- release and dispatch -------------------------------------------------------------
    def _release(self, lease: Lease) -> None:
        eid = lease.endpoint.id
        n = self.in_flight.get(eid, 1) - 1
        if n > 0:
            self.in_flight[eid] = n
        else:
            self.in_flight.pop(eid, None)
        st = lease.state
        st.in_flight -= 1
        st.busy_seconds += monotonic() - lease.started
        if lease.share is not None:
            self._leave(lease.share)
        if st.queue:
            self._dispatch(st, self.holder.table)

    def _dispatch(self, st: VersionState, table: RoutingTable) -> None:
        route = table.functions.get(st.function_id, {}).get(st.version_id)
        if route is None:
            return
        queue = st.queue
        if st.pinned:
            self._dispatch_pinned(st, route)
            return
        while queue:
            waiter = queue[0]
            if waiter.future.done():
                queue.popleft()
                continue
            ep = self._pick(route, waiter.exclude)
            if ep is None:
                return
            queue.popleft()
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.future.set_result(self._grant(ep, st))

    def _dispatch_pinned(self, st: VersionState, route: VersionRoute) -> None:
        """The queue in order, with pinned waiters: each takes a slot on its own instance
        when that one has one (any instance once its own is gone or draining), the others
        any slot; a waiter that finds none stays in its place."""
        limit = route.max_concurrency if route.max_concurrency > 0 else 1
        inflight = self.in_flight
        queue = st.queue
        for waiter in list(queue):
            ep: Endpoint | None = None
            if not waiter.future.done():
                pinned = waiter.pinned
                if pinned is not None:
                    own = None
                    for e in route.endpoints:
                        if e.id == pinned and not e.draining:
                            own = e
                            break
                    if own is not None:
                        if inflight.get(own.id, 0) >= limit:
                            continue  # its instance is busy: it keeps its place
                        ep = own
                if ep is None:
                    ep = self._pick(route, waiter.exclude)
                    if ep is None:
                        return  # no free slot anywhere: nobody behind gets one either
            queue.remove(waiter)
            if waiter.pinned is not None:
                st.pinned -= 1
            if ep is not None:
                if waiter.timer is not None:
                    waiter.timer.cancel()
                waiter.future.set_result(self._grant(ep, st))

    def on_table(self, table: RoutingTable) -> None:
        """A new snapshot: instances may have appeared (cold start) or gone."""
        for st in list(self.versions.values()):
            if st.queue:
                self._dispatch(st, table)
            elif st.in_flight == 0 and st.version_id not in table.functions.get(st.function_id, {}):
                del self.versions[st.version_id]

    async def watch(self) -> None:
        """Runs for the gateway's life: dispatch queued requests on every new snapshot."""
        holder = self.holder
        version = holder.table.version
        while True:
            table = await holder.wait_newer_than(version, None)
            version = table.version
            self.on_table(table)

    # -- reporting ------------------------------------------------------------------------
    def version_loads(self, table: RoutingTable) -> dict[str, VersionLoad]:
        out = {}
        for vid, st in self.versions.items():
            route = table.functions.get(st.function_id, {}).get(vid)
            ready = route is not None and any(not e.draining for e in route.endpoints)
            depth = len(st.queue)
            out[vid] = VersionLoad(
                queue_depth=depth,
                in_flight=st.in_flight,
                busy_seconds=st.busy_seconds,
                requests=st.requests,
                cold_waiting=0 if ready else depth,
                last_request_at=st.last_request_at,
                queued_ids=[w.request_id for w in islice(st.queue, 1000)],
                endpoint_in_flight=self._endpoint_loads(st, route),
            )
        return out

    def _endpoint_loads(self, st: VersionState, route: VersionRoute | None) -> dict[str, int]:
        """In flight per instance: the route's, and any other it still has requests on (an
        instance the routing table dropped while a stream ran on it). Leaving that one out
        would tell a draining control plane it is idle, and it would be stopped under the
        stream."""
        inflight = self.in_flight
        loads = {} if route is None else {e.id: inflight.get(e.id, 0) for e in route.endpoints}
        for eid in list(st.endpoints):
            if eid in loads:
                continue
            n = inflight.get(eid, 0)
            if n:
                loads[eid] = n
            else:
                st.endpoints.discard(eid)
        return loads

    def capped_connections(self) -> int:
        """Client connections that hold or wait for slots under the per-connection cap."""
        return len(self._shares)

    def queued_total(self) -> int:
        return sum(len(st.queue) for st in self.versions.values())
