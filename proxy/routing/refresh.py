"""Fetch the newest routing table now, on a miss (read-your-writes, issue 16).

The management API answers a write only once the table that reflects it is published
(control/api/routing_sync.py), but a gateway in another process receives it a moment
later. A request for a function or key the held table does not know therefore asks
its source once for a newer table before it answers 404 or 401. Misses share rounds:
at most one fetch is in flight per process, and a miss waits for a round that started
after it (one that started before might have missed the write), so a flood of unknown
ids costs the control plane or Redis one cheap read at a time, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Refresher:
    __slots__ = ("_fetch", "_next", "_task", "timeout")

    def __init__(self, fetch: Callable[[], Awaitable[object]], timeout: float = 2.0) -> None:
        self._fetch = fetch
        self.timeout = timeout
        self._next: asyncio.Future[None] | None = None  # the round a new miss joins
        self._task: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        """Return once a fetch that started after this call has ended (or timed out)."""
        fut = self._next
        if fut is None:
            fut = self._next = asyncio.get_running_loop().create_future()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._rounds())
        await asyncio.shield(fut)

    async def _rounds(self) -> None:
        try:
            while self._next is not None:
                fut, self._next = self._next, None
                try:
                    await asyncio.wait_for(self._fetch(), self.timeout)
                except Exception as exc:  # unreachable for a moment: the miss answers from what is held
                    log.debug("routing refresh failed: %s", exc)
                fut.set_result(None)
        finally:
            self._task = None
