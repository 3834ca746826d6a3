"""In-memory StateStore: the reference behaviour of the contract, and the fake for tests."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .base import Change, Compacted, Conflict, Delete, Op, Put, Record, StoreHelpers


class MemoryStore(StoreHelpers):
    def __init__(self, history: int = 10_000) -> None:
        self._data: dict[tuple[str, str], Record] = {}
        self._rev = 0
        self._log: deque[Change] = deque()
        self._history = history
        self._compacted_through = 0  # revision of the newest change dropped from the log
        self._changed = asyncio.Condition()

    async def get(self, kind: str, key: str) -> Record | None:
        rec = self._data.get((kind, key))
        return None if rec is None else Record(rec.kind, rec.key, rec.revision, copy.deepcopy(rec.value))

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        out = [
            Record(r.kind, r.key, r.revision, copy.deepcopy(r.value))
            for (k, key), r in self._data.items()
            if k == kind and key.startswith(prefix)
        ]
        out.sort(key=lambda r: r.key)
        return out

    async def commit(self, ops: Sequence[Op]) -> int:
        for op in ops:  # check every expectation before touching anything
            if op.expect is None:
                continue
            cur = self._data.get((op.kind, op.key))
            actual = cur.revision if cur else 0
            if actual != op.expect:
                raise Conflict(op.kind, op.key, op.expect, actual)
        self._rev += 1
        rev = self._rev
        for op in ops:
            if isinstance(op, Put):
                value: dict[str, Any] = copy.deepcopy(op.value)
                self._data[(op.kind, op.key)] = Record(op.kind, op.key, rev, value)
                self._append(Change(rev, op.kind, op.key, copy.deepcopy(value)))
            elif isinstance(op, Delete) and self._data.pop((op.kind, op.key), None) is not None:
                self._append(Change(rev, op.kind, op.key, None))
        async with self._changed:
            self._changed.notify_all()
        return rev

    def _append(self, change: Change) -> None:
        if len(self._log) >= self._history:
            self._compacted_through = self._log.popleft().revision
        self._log.append(change)

    async def revision(self) -> int:
        return self._rev

    async def watch(self, since: int) -> AsyncIterator[Change]:
        cursor = since
        while True:
            if cursor < self._compacted_through:
                raise Compacted(f"history through revision {self._compacted_through} was dropped")
            upto = self._rev  # a commit that changed nothing (delete of a missing key) logs no change
            pending = [c for c in self._log if cursor < c.revision <= upto]
            for change in pending:
                cursor = change.revision
                yield change
            cursor = max(cursor, upto)
            async with self._changed:
                if self._rev <= cursor:
                    await self._changed.wait()

    async def aclose(self) -> None:
        return None
