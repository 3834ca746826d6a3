"""A keyed work queue: each key waits at most once, and at most one pass per key runs.

Marking a key that is already waiting does nothing (the pass it waits for will read
the newest state anyway); marking a key whose pass is running queues it again once
that pass is done, so a change that landed mid-pass is never lost. Passes for
different keys run side by side (see Reconciler._worker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedQueue(Generic[K]):
    def __init__(self) -> None:
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._waiting: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()

    def add(self, key: K) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._ready.put_nowait(key)

    async def take(self) -> K:
        """The next waiting key; it is active until `done(key)`."""
        key = await self._ready.get()
        self._waiting.discard(key)
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def active(self, key: K) -> bool:
        return key in self._active

    def __len__(self) -> int:
        return len(self._waiting)
