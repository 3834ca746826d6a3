"""The StateStore contract: revisioned JSON documents, compare-and-set, a change feed.

Every write gets the next value of one store-wide revision counter (as etcd does),
so a reader that saw revision N can ask for everything that happened after it.

Documents are grouped by *kind* (``functions``, ``deployments``, ``keys``, ...)
and addressed by a string key inside the kind. Values are JSON-able dicts.

Compare-and-set: ``expect=None`` writes unconditionally, ``expect=0`` requires
that the key does not exist, ``expect=N`` requires that the key is at revision N.
A failed expectation raises :class:`Conflict` and writes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class StoreError(Exception):
    """Base class of store failures."""


class Conflict(StoreError):
    """A compare-and-set expectation did not hold; nothing was written."""

    def __init__(self, kind: str, key: str, expected: int | None, actual: int) -> None:
        super().__init__(f"{kind}/{key}: expected revision {expected}, found {actual}")
        self.kind = kind
        self.key = key
        self.expected = expected
        self.actual = actual


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (Redis down or cut off); nothing is known
    to have been written. The management API answers 503 with Retry-After."""


class Compacted(StoreError):
    """watch(since) asked for history the store no longer keeps; re-list and watch again."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    key: str
    revision: int  # the store revision of the write that produced this value
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    revision: int
    kind: str
    key: str
    value: dict[str, Any] | None  # None: the key was deleted


@dataclass(frozen=True, slots=True)
class Put:
    kind: str
    key: str
    value: dict[str, Any]
    expect: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    kind: str
    key: str
    expect: int | None = None  # a delete of a missing key with expect=None is a no-op


Op = Put | Delete


@runtime_checkable
class StateStore(Protocol):
    async def get(self, kind: str, key: str) -> Record | None: ...

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        """All records of a kind whose key starts with prefix, ordered by key."""
        ...

    async def commit(self, ops: Sequence[Op]) -> int:
        """Apply all ops atomically (all expectations hold, or Conflict and nothing
        changes). Returns the new store revision; every op's record gets it."""
        ...

    async def put(self, kind: str, key: str, value: dict[str, Any], *, expect: int | None = None) -> Record: ...

    async def delete(self, kind: str, key: str, *, expect: int | None = None) -> bool:
        """True when something was deleted."""
        ...

    async def revision(self) -> int:
        """The store revision of the latest write (0 for an empty store)."""
        ...

    def watch(self, since: int) -> AsyncIterator[Change]:
        """Every change with revision > since, in order, then new ones as they happen.
        Raises Compacted when the history before `since` was dropped."""
        ...

    async def aclose(self) -> None: ...


class StoreHelpers(ABC):
    """put/delete in terms of commit, for implementations to inherit."""

    @abstractmethod
    async def get(self, kind: str, key: str) -> Record | None: ...

    @abstractmethod
    async def commit(self, ops: Sequence[Op]) -> int: ...

    async def put(self, kind: str, key: str, value: dict[str, Any], *, expect: int | None = None) -> Record:
        rev = await self.commit([Put(kind, key, value, expect)])
        return Record(kind, key, rev, value)

    async def delete(self, kind: str, key: str, *, expect: int | None = None) -> bool:
        existed = await self.get(kind, key) is not None
        await self.commit([Delete(kind, key, expect)])
        return existed
