"""What a replica that stopped leading does with the instances its own backends run.

Instances of a backend whose processes belong to this replica (`per_replica = True`: the
local backend, whose instances die with `fngate serve`) cannot be adopted by the new
leader, which runs its own. The new leader keeps their instance docs, draining (no new
requests; in-flight ones finish and gateways report them), and deletes each doc once
nothing runs on it (control/reconciler.py, `inherit_grace`). This replica stops each
instance when its doc is gone, or when `deadline` passes (the drain timeout plus a
margin: the new leader is gone too, say). Instances of shared backends (Kubernetes,
static endpoints) are left running: the new leader's backend replays and adopts them.

If this replica leads again before the hand-over ends, the hand-over stops and the
new reconciler adopts what still runs (its backends replay it).

A leader stopped on purpose (SIGTERM) hands over the same way (control/serve.py): it gives
the lease up while its gateway drains, waits for another replica to take it (`successor`),
and its local instances stop only once that replica has drained them, within the stop's
--drain-timeout. With no other replica to take over, they stop with this one as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from fngate.backends.base import Backend, InstanceEvent
from fngate.control import records as R
from fngate.control.leader import LEASE_KEY, LEASE_KIND
from fngate.control.store.base import StateStore

log = logging.getLogger("fngate.handover")


def per_replica(backend: Backend) -> bool:
    """Whether the backend's instances live and die with this replica (an optional Backend attribute)."""
    return bool(getattr(backend, "per_replica", False))


async def successor(store: StateStore, replica_id: str, within: float, poll: float = 0.1) -> str | None:
    """The replica that holds the lease this one gave up, once one does within `within`
    seconds (followers look at it every few seconds), else None: no other replica runs."""
    ends = time.monotonic() + within
    while True:
        try:
            record = await store.get(LEASE_KIND, LEASE_KEY)
        except Exception as exc:  # the store is away: ask again until the end
            log.debug("looking for a successor: %s", exc)
            record = None
        if record is not None:
            holder = str(record.value.get("holder") or "")
            if holder and holder != replica_id and float(record.value.get("expires", 0)) > time.time():
                return holder
        if time.monotonic() >= ends:
            return None
        await asyncio.sleep(poll)


class HandOver:
    def __init__(
        self,
        store: StateStore,
        backends: Mapping[str, Backend],
        running: list[tuple[str, InstanceEvent]],
        *,
        deadline: float,
        poll: float = 0.5,
    ) -> None:
        self.store = store
        self.backends = backends
        self.left = [(name, ev.version_id, ev.instance_id) for name, ev in running if name in backends and per_replica(backends[name])]
        self.deadline = deadline
        self.poll = poll

    async def run(self) -> None:
        if not self.left:
            return
        log.warning("fngate: handing over %d local instance(s): each stops once the new leader has drained it", len(self.left))
        ends = time.monotonic() + self.deadline
        while self.left:
            late = time.monotonic() >= ends
            keep = []
            for name, vid, iid in self.left:
                try:
                    gone = await self.store.get(R.INSTANCES, R.instance_key(vid, iid)) is None
                except Exception as exc:  # the store is away: ask again
                    log.debug("hand-over: %s", exc)
                    gone = False
                if gone or late:
                    if late and not gone:
                        log.warning("fngate: hand-over deadline passed; stopping instance %s of %s anyway", iid, vid)
                    await self.backends[name].stop_instances(vid, [iid], graceful=True)
                else:
                    keep.append((name, vid, iid))
            self.left = keep
            if keep:
                await asyncio.sleep(self.poll)
        log.info("fngate: hand-over done: no local instance left")
