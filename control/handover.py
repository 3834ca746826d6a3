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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from fngate.backends.base import Backend, InstanceEvent
from fngate.control import records as R
from fngate.control.store.base import StateStore

log = logging.getLogger("fngate.handover")


def per_replica(backend: Backend) -> bool:
    """Whether the backend's instances live and die with this replica (an optional Backend attribute)."""
    return bool(getattr(backend, "per_replica", False))


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
