"""EventHub: fan-out of InstanceEvents with replay of the current state.

Backends keep one hub. Each `subscribe()` first yields a snapshot of the live
instances (STARTING or READY, as last reported), then every event as it happens,
so a subscriber that starts late (or restarts) still sees the whole picture.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .base import InstanceEvent, InstanceEventKind


class EventHub:
    def __init__(self) -> None:
        self._current: dict[str, InstanceEvent] = {}  # instance id -> last STARTING/READY event
        self._queues: set[asyncio.Queue[InstanceEvent | None]] = set()

    def emit(self, event: InstanceEvent) -> None:
        if event.kind in (InstanceEventKind.STARTING, InstanceEventKind.READY):
            self._current[event.instance_id] = event
        else:
            self._current.pop(event.instance_id, None)
        for q in self._queues:
            q.put_nowait(event)

    def current(self, version_id: str | None = None) -> list[InstanceEvent]:
        return [e for e in self._current.values() if version_id is None or e.version_id == version_id]

    async def subscribe(self) -> AsyncIterator[InstanceEvent]:
        q: asyncio.Queue[InstanceEvent | None] = asyncio.Queue()
        for current in list(self._current.values()):
            q.put_nowait(current)
        self._queues.add(q)
        try:
            while True:
                event = await q.get()
                if event is None:  # the backend closed
                    return
                yield event
        finally:
            self._queues.discard(q)

    def close(self) -> None:
        for q in self._queues:
            q.put_nowait(None)
