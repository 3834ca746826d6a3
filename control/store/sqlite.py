"""SQLite StateStore: the embedded, durable default.

One connection, used from one dedicated thread so the event loop never blocks on
disk I/O. WAL with synchronous=FULL: a commit() returns only once the write is on
disk, so an acknowledged API write survives a crash. Every change is also appended
to a `changes` table, the history watch() reads; it keeps the newest `history`
changes and remembers through which revision older ones were dropped.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .base import Change, Compacted, Conflict, Delete, Op, Put, Record, StoreHelpers

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    kind TEXT NOT NULL, key TEXT NOT NULL, revision INTEGER NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, revision INTEGER NOT NULL,
    kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""


class SqliteStore(StoreHelpers):
    def __init__(self, path: str | Path, history: int = 10_000, poll_interval: float = 1.0) -> None:
        self._path = str(path)
        self._history = history
        self._poll = poll_interval  # watch also re-checks on a timer (writes from other processes)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fngate-sqlite")
        self._db: sqlite3.Connection | None = None
        self._generation = 0  # bumped on every local commit; watchers wait for it to move
        self._changed = asyncio.Condition()
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, **kwargs: Any) -> SqliteStore:
        store = cls(path, **kwargs)
        await store._run(store._connect)
        return store

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _connect(self) -> None:
        path = Path(self._path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # owner-only before SQLite opens it: its -wal and -shm files take the same mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if existing.exists():
                existing.chmod(0o600)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA secure_delete=ON")  # replaced and deleted values are zeroed, not left in free pages
        db.executescript(_SCHEMA)
        self._db = db

    @property
    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    # reads ---------------------------------------------------------------

    def _get(self, kind: str, key: str) -> Record | None:
        row = self._open_db.execute("SELECT revision, value FROM docs WHERE kind=? AND key=?", (kind, key)).fetchone()
        return None if row is None else Record(kind, key, row[0], orjson.loads(row[1]))

    async def get(self, kind: str, key: str) -> Record | None:
        return await self._run(self._get, kind, key)

    def _list(self, kind: str, prefix: str) -> builtins.list[Record]:
        rows = self._open_db.execute(
            "SELECT key, revision, value FROM docs WHERE kind=? AND substr(key, 1, ?)=? ORDER BY key",
            (kind, len(prefix), prefix),
        ).fetchall()
        return [Record(kind, k, rev, orjson.loads(v)) for k, rev, v in rows]

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        return await self._run(self._list, kind, prefix)

    def _revision(self) -> int:
        revision: int = self._open_db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
        return revision

    async def revision(self) -> int:
        return await self._run(self._revision)

    # writes --------------------------------------------------------------

    def _commit(self, ops: Sequence[Op]) -> int:
        db = self._open_db
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                if op.expect is None:
                    continue
                row = db.execute("SELECT revision FROM docs WHERE kind=? AND key=?", (op.kind, op.key)).fetchone()
                actual = row[0] if row else 0
                if actual != op.expect:
                    raise Conflict(op.kind, op.key, op.expect, actual)
            rev = self._revision() + 1
            db.execute("UPDATE meta SET value=? WHERE name='revision'", (rev,))
            for op in ops:
                if isinstance(op, Put):
                    blob = orjson.dumps(op.value)
                    db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?)", (op.kind, op.key, rev, blob))
                    db.execute("INSERT INTO changes (revision, kind, key, value) VALUES (?, ?, ?, ?)", (rev, op.kind, op.key, blob))
                elif isinstance(op, Delete) and db.execute("DELETE FROM docs WHERE kind=? AND key=?", (op.kind, op.key)).rowcount:
                    db.execute("INSERT INTO changes (revision, kind, key, value) VALUES (?, ?, ?, NULL)", (rev, op.kind, op.key))
            self._trim()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return rev

    def _trim(self) -> None:
        db = self._open_db
        (count,) = db.execute("SELECT count(*) FROM changes").fetchone()
        excess = count - self._history
        if excess <= 0:
            return
        last_seq, last_rev = db.execute("SELECT seq, revision FROM changes ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)).fetchone()
        db.execute("DELETE FROM changes WHERE seq <= ?", (last_seq,))
        db.execute("UPDATE meta SET value=max(value, ?) WHERE name='compacted'", (last_rev,))

    async def commit(self, ops: Sequence[Op]) -> int:
        rev = await self._run(self._commit, list(ops))
        self._generation += 1
        async with self._changed:
            self._changed.notify_all()
        return rev

    # change feed ---------------------------------------------------------

    def _changes_after(self, since: int, after_seq: int) -> tuple[int, builtins.list[tuple[int, Change]]]:
        compacted = self._open_db.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()[0]
        rows = self._open_db.execute(
            "SELECT seq, revision, kind, key, value FROM changes WHERE revision > ? AND seq > ? ORDER BY seq LIMIT 1000",
            (since, after_seq),
        ).fetchall()
        return compacted, [(seq, Change(r, k, key, None if v is None else orjson.loads(v))) for seq, r, k, key, v in rows]

    async def watch(self, since: int) -> AsyncIterator[Change]:
        cursor, after_seq = since, 0  # paging by seq: one commit's changes may span pages
        while True:
            generation = self._generation
            compacted, changes = await self._run(self._changes_after, since, after_seq)
            if cursor < compacted:
                raise Compacted(f"history through revision {compacted} was dropped")
            for after_seq, change in changes:  # noqa: B007 the last seq seen is where the next page starts
                cursor = change.revision
                yield change
            if changes:
                continue
            async with self._changed:
                if generation == self._generation:
                    try:  # asyncio.timeout: wait_for (3.11) can lose a cancel that lands as it is notified
                        async with asyncio.timeout(self._poll):
                            await self._changed.wait()
                    except TimeoutError:
                        pass

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._db is not None:
            await self._run(self._db.close)
        self._closed = True
        self._pool.shutdown(wait=True)
