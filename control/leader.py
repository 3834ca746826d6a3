"""One leader among the `fngate serve` replicas that share a store (Redis).

Every replica serves the management API and invocations; only the leader runs the
control loops (reconciler, autoscaler, routing publisher), which must not run twice.
Leadership is a lease: one document (`leases/control`: holder, fencing token, expiry)
taken and renewed by compare-and-set. A replica takes it when it is absent or expired,
with the token one higher than the last; the leader renews it every `renew_every`
seconds, well inside its `ttl`, and a replica that finds it held by another stays a
follower. So a new leader is in place within about `ttl + renew_every` after the old
one died.

Fencing: the leader's loops write through a FencedStore, which adds the lease document
at the revision this replica last saw to every commit. A leader that was paused past its
expiry (and replaced) has a stale revision there, so its writes are refused as a
whole (NotLeader) instead of racing the new leader's; it then steps down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from fngate.control.store.base import Change, Conflict, Delete, Op, Put, Record, StateStore

log = logging.getLogger(__name__)

LEASE_KIND = "leases"
LEASE_KEY = "control"


class NotLeader(Conflict):
    """A write of the control loops refused: this replica no longer holds the lease."""

    def __init__(self, revision: int, actual: int) -> None:
        super().__init__(LEASE_KIND, LEASE_KEY, revision, actual)


class Leadership:
    """Takes and keeps the lease; calls `on_elected(token)` when this replica becomes the
    leader and `on_deposed()` when it stops being one (lost the lease, or cannot renew
    it before it expires)."""

    def __init__(
        self,
        store: StateStore,
        replica_id: str,
        on_elected: Callable[[int], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        *,
        ttl: float = 10.0,
        renew_every: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < renew_every < ttl:
            raise ValueError("the lease must be renewed more often than it expires")
        self.store = store
        self.replica_id = replica_id
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.ttl = ttl
        self.renew_every = renew_every
        self.clock = clock
        self.leading = False
        self.token = 0  # the fencing token of the lease this replica holds (or last held)
        self.revision = 0  # the lease document's revision as this replica last wrote it
        self.expires = 0.0
        self.value: dict[str, Any] = {}  # the lease document as this replica last wrote it
        self.lock = asyncio.Lock()  # one commit touching the lease at a time (renewals, fenced writes)
        self._task: asyncio.Task[None] | None = None

    async def step(self) -> None:
        """One look at the lease: renew it, take it, or follow. The callbacks run after
        the lock is released: the loops they start or stop write through it."""
        deposed_by = elected = None
        async with self.lock:
            record = await self.store.get(LEASE_KIND, LEASE_KEY)
            now = self.clock()
            if self.leading:
                if record is not None and record.value.get("holder") == self.replica_id and record.revision == self.revision:
                    await self._write(record, self.token, now)
                    return
                self.leading = False  # it changed behind this replica's back: someone else took it
                deposed_by = str(record.value.get("holder")) if record is not None else "nobody (it was deleted)"
            elif record is None or float(record.value.get("expires", 0)) <= now:
                token = (int(record.value.get("token", 0)) if record is not None else 0) + 1
                try:
                    await self._write(record, token, now)
                except Conflict:
                    return  # another replica took it first
                self.token = elected = token
                self.leading = True
        if deposed_by is not None:
            log.warning("fngate: this replica (%s) no longer leads the control loops: the lease is held by %s", self.replica_id, deposed_by)
            await self.on_deposed()
        elif elected is not None:
            log.warning("fngate: this replica (%s) leads the control loops, fencing token %d", self.replica_id, elected)
            await self.on_elected(elected)

    async def _write(self, record: Record | None, token: int, now: float) -> None:
        value = {"holder": self.replica_id, "token": token, "expires": now + self.ttl}
        self.revision = await self.store.commit([Put(LEASE_KIND, LEASE_KEY, value, expect=record.revision if record is not None else 0)])
        self.value = value
        self.expires = now + self.ttl

    async def _step_down(self, why: str) -> None:
        if not self.leading:
            return
        self.leading = False
        log.warning("fngate: this replica (%s) no longer leads the control loops: %s", self.replica_id, why)
        await self.on_deposed()

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: keep leading only while the lease holds
                if self.leading and self.clock() >= self.expires - self.renew_every:
                    await self._step_down(f"cannot renew the lease: {exc}")
                else:
                    log.debug("lease step failed: %s", exc)
            await asyncio.sleep(self.renew_every if self.leading else min(self.renew_every, self.ttl / 4))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="leadership")

    async def aclose(self) -> None:
        """Stop; a leader gives the lease up so another replica takes over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leading:
            await self._step_down("stopping")
            try:
                async with self.lock:
                    record = await self.store.get(LEASE_KIND, LEASE_KEY)
                    if record is not None and record.revision == self.revision:
                        expired = {**record.value, "expires": 0}
                        await self.store.commit([Put(LEASE_KIND, LEASE_KEY, expired, expect=record.revision)])
            except Exception as exc:  # it expires by itself
                log.debug("releasing the lease: %s", exc)


class FencedStore:
    """The store as the leader's control loops see it: reads pass through; every commit
    carries the lease at the revision this replica holds, so it applies only while this
    replica still leads (else NotLeader, and nothing is written)."""

    def __init__(self, store: StateStore, leadership: Leadership) -> None:
        self.inner = store
        self.leadership = leadership

    async def get(self, kind: str, key: str) -> Record | None:
        return await self.inner.get(kind, key)

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        return await self.inner.list(kind, prefix)

    async def commit(self, ops: Sequence[Op]) -> int:
        lead = self.leadership
        async with lead.lock:
            if not lead.leading:
                raise NotLeader(lead.revision, -1)
            lease = Put(LEASE_KIND, LEASE_KEY, lead.value, expect=lead.revision)  # unchanged: a check that it is still ours
            try:
                revision = await self.inner.commit([*ops, lease])
            except Conflict as exc:
                if exc.kind == LEASE_KIND and exc.key == LEASE_KEY:
                    raise NotLeader(lead.revision, exc.actual) from None
                raise
            lead.revision = revision
            return revision

    async def put(self, kind: str, key: str, value: dict[str, Any], *, expect: int | None = None) -> Record:
        revision = await self.commit([Put(kind, key, value, expect)])
        return Record(kind, key, revision, value)

    async def delete(self, kind: str, key: str, *, expect: int | None = None) -> bool:
        existed = await self.inner.get(kind, key) is not None
        await self.commit([Delete(kind, key, expect)])
        return existed

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, since: int) -> AsyncIterator[Change]:
        return self.inner.watch(since)

    async def aclose(self) -> None:
        """The inner store belongs to the server, which closes it."""
