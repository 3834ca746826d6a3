"""A StateStore wrapper that keeps chosen kinds encrypted in the store underneath.

Writers and readers (the API, the reconciler) see plain documents; the SQLite
file, its change history, Redis keys, streams and dumps only ever hold
SecretBox-sealed ones. Every other kind passes through untouched.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..secrets_box import SecretBox
from .base import Change, Op, Put, Record, StateStore, StoreHelpers


class SealedStore(StoreHelpers):
    def __init__(self, inner: StateStore, box: SecretBox, kinds: Iterable[str]) -> None:
        self._inner = inner
        self._box = box
        self._kinds = frozenset(kinds)

    def _open(self, kind: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
        return self._box.open(value, f"{kind}/{key}") if kind in self._kinds else value

    def _open_record(self, rec: Record) -> Record:
        return replace(rec, value=self._open(rec.kind, rec.key, rec.value)) if rec.kind in self._kinds else rec

    async def get(self, kind: str, key: str) -> Record | None:
        rec = await self._inner.get(kind, key)
        return None if rec is None else self._open_record(rec)

    async def list(self, kind: str, prefix: str = "") -> builtins.list[Record]:
        return [self._open_record(r) for r in await self._inner.list(kind, prefix)]

    async def commit(self, ops: Sequence[Op]) -> int:
        sealed: builtins.list[Op] = []
        for op in ops:
            if isinstance(op, Put) and op.kind in self._kinds:
                sealed.append(Put(op.kind, op.key, self._box.seal(op.value, f"{op.kind}/{op.key}"), op.expect))
            else:
                sealed.append(op)
        return await self._inner.commit(sealed)

    async def seal_plaintext(self) -> int:
        """Re-write, sealed, any record of a sealed kind still stored in the clear (written
        before encryption at rest existed). Returns how many were sealed."""
        count = 0
        for kind in sorted(self._kinds):
            for rec in await self._inner.list(kind):
                if "sealed" not in rec.value:
                    await self._inner.commit([Put(kind, rec.key, self._box.seal(rec.value, f"{kind}/{rec.key}"), rec.revision)])
                    count += 1
        return count

    async def revision(self) -> int:
        return await self._inner.revision()

    async def watch(self, since: int) -> AsyncIterator[Change]:
        async for change in self._inner.watch(since):
            if change.value is not None and change.kind in self._kinds:
                change = replace(change, value=self._open(change.kind, change.key, change.value))
            yield change

    async def aclose(self) -> None:
        await self._inner.aclose()
