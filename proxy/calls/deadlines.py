"""Coarse deadlines for calls (proxy/calls/call.py): one event-loop timer per tick, not one per request.

Creating and cancelling a loop timer for every request was the single largest cost
of the fast path after the socket writes (py-spy: ~6% of a small request). A request
only needs its deadline to fire at about the right time (the poll window already has
seconds of grace), so deadlines go into buckets of `tick` seconds, and a timer that
runs only while some bucket is filled fires every bucket that came due. A deadline
fires at most one tick late, never early.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Expiring(Protocol):
    def on_deadline(self) -> None: ...


class Deadlines:
    __slots__ = ("_done", "_timer", "buckets", "loop", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, tick: float = 0.25) -> None:
        self.loop = loop  # None: the running loop, taken at the first `add`
        self.tick = tick
        self.buckets: dict[int, set[Expiring]] = {}
        self._done = int(loop.time() / tick) if loop is not None else 0  # every bucket up to this one has fired
        self._timer: asyncio.TimerHandle | None = None

    def add(self, when: float, item: Expiring) -> int:
        """Call `item.on_deadline()` at or soon after loop time `when`; returns the key
        `remove` needs."""
        key = int(when / self.tick) + 1
        bucket = self.buckets.get(key)
        if bucket is None:
            if self._timer is None:  # idle until now: nothing older can be due
                loop = self.loop
                if loop is None:
                    loop = self.loop = asyncio.get_running_loop()
                self._done = int(loop.time() / self.tick)
                self._timer = loop.call_at((self._done + 1) * self.tick, self._fire)
            if key <= self._done:
                key = self._done + 1
                bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = set()
        bucket.add(item)
        return key

    def remove(self, key: int, item: Expiring) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.discard(item)

    def _fire(self) -> None:
        self._timer = None
        loop = self.loop
        assert loop is not None  # set with the timer
        now = int(loop.time() / self.tick)
        buckets = self.buckets
        for key in range(self._done + 1, now + 1):
            due = buckets.pop(key, None)
            self._done = key
            if due:
                for item in due:
                    item.on_deadline()
        self._done = max(self._done, now)
        if buckets:
            self._timer = loop.call_at((self._done + 1) * self.tick, self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.buckets.clear()
