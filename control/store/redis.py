"""Redis StateStore: shared by several control-plane/gateway processes.

Layout under a prefix (default ``fngate:store:``):
  rev            the store revision counter
  doc:{kind}     hash key -> "[revision,<value json>]"
  changes        a Stream with one entry per change, id "{revision}-{n}"
  compacted      the newest revision trimmed from the stream

commit() is one Lua script, so checking every expectation, bumping the revision,
writing the docs and appending to the stream happen atomically. watch() reads the
stream with XREAD BLOCK; when `since` is older than what the stream still holds it
raises Compacted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import Change, Compacted, Conflict, Delete, Op, Put, Record, StoreHelpers, StoreUnavailable

# ARGV: history, then per op: type ("P"|"D"), kind, key, expect ("" = none), value json ("" for D)
_COMMIT = """
local prefix = KEYS[1]
local history = tonumber(ARGV[1])
local n = (#ARGV - 1) / 5
for i = 0, n - 1 do
  local b = 2 + i * 5
  local expect = ARGV[b + 3]
  if expect ~= '' then
    local cur = redis.call('HGET', prefix .. 'doc:' .. ARGV[b + 1], ARGV[b + 2])
    local actual = 0
    if cur then actual = tonumber(string.match(cur, '^%[(%d+),')) end
    if actual ~= tonumber(expect) then
      return {'conflict', ARGV[b + 1], ARGV[b + 2], expect, tostring(actual)}
    end
  end
end
local rev = redis.call('INCR', prefix .. 'rev')
local seq = 0
for i = 0, n - 1 do
  local b = 2 + i * 5
  local hash = prefix .. 'doc:' .. ARGV[b + 1]
  if ARGV[b] == 'P' then
    redis.call('HSET', hash, ARGV[b + 2], '[' .. rev .. ',' .. ARGV[b + 4] .. ']')
    redis.call('XADD', prefix .. 'changes', rev .. '-' .. seq, 'kind', ARGV[b + 1], 'key', ARGV[b + 2], 'value', ARGV[b + 4])
    seq = seq + 1
  elseif redis.call('HDEL', hash, ARGV[b + 2]) == 1 then
    redis.call('XADD', prefix .. 'changes', rev .. '-' .. seq, 'kind', ARGV[b + 1], 'key', ARGV[b + 2])
    seq = seq + 1
  end
end
local len = redis.call('XLEN', prefix .. 'changes')
if len > history then
  local old = redis.call('XRANGE', prefix .. 'changes', '-', '+', 'COUNT', len - history)
  local last = old[#old][1]
  redis.call('XTRIM', prefix .. 'changes', 'MAXLEN', history)
  local trimmed = tonumber(string.match(last, '^(%d+)-'))
  local cur = tonumber(redis.call('GET', prefix .. 'compacted') or '0')
  if trimmed > cur then redis.call('SET', prefix .. 'compacted', trimmed) end
end
return {'ok', tostring(rev)}
"""

_MAX_SEQ = 2**64 - 1
# XREAD with bytes responses: [(stream, [(entry id, {field: value})])]
_XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


def _decode(kind: str, key: str, raw: bytes) -> Record:
    rev, value = orjson.loads(raw)
    return Record(kind, key, rev, value)


@contextmanager
def _reachable() -> Iterator[None]:
    """Redis' connection failures as the store's own StoreUnavailable."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


class RedisStore(StoreHelpers):
    def __init__(self, url: str, *, prefix: str = "fngate:store:", history: int = 10_000, block_ms: int = 1000) -> None:
        self._redis = aioredis.from_url(url)
        self._prefix = prefix
        self._history = history
        self._block_ms = block_ms
        self._commit_script = self._redis.register_script(_COMMIT)

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> RedisStore:
        store = cls(url, **kwargs)
        await store._redis.ping()  # fail at start, not on the first request
        return store

    async def get(self, kind: str, key: str) -> Record | None:
        with _reachable():
            raw = cast("bytes | None", await self._redis.hget(self._prefix + "doc:" + kind, key))  # bytes: no decode_responses
        return None if raw is None else _decode(kind, key, raw)

    async def list(self, kind: str, prefix: str = "") -> list[Record]:
        with _reachable():
            items = cast("dict[bytes, bytes]", await self._redis.hgetall(self._prefix + "doc:" + kind))
        out = [_decode(kind, k.decode(), v) for k, v in items.items() if k.decode().startswith(prefix)]
        out.sort(key=lambda r: r.key)
        return out

    async def commit(self, ops: Sequence[Op]) -> int:
        args: list[Any] = [self._history]
        for op in ops:
            expect = "" if op.expect is None else str(op.expect)
            if isinstance(op, Put):
                args += ["P", op.kind, op.key, expect, orjson.dumps(op.value)]
            elif isinstance(op, Delete):
                args += ["D", op.kind, op.key, expect, ""]
        with _reachable():
            result = await self._commit_script(keys=[self._prefix], args=args)
        tag = result[0].decode()
        if tag == "conflict":
            raise Conflict(result[1].decode(), result[2].decode(), int(result[3]), int(result[4]))
        return int(result[1])

    async def revision(self) -> int:
        with _reachable():
            raw = await self._redis.get(self._prefix + "rev")
        return int(raw or 0)

    async def _compacted(self) -> int:
        return int(await self._redis.get(self._prefix + "compacted") or 0)

    async def watch(self, since: int) -> AsyncIterator[Change]:
        stream = self._prefix + "changes"
        last_id = f"{since}-{_MAX_SEQ}"
        cursor = since
        while True:
            with _reachable():
                reply = cast("_XReadReply | None", await self._redis.xread({stream: last_id}, count=500, block=self._block_ms))
                # checked after the read: a trim that raced with it shows up here
                compacted = await self._compacted()
            if cursor < compacted:
                raise Compacted(f"history through revision {compacted} was dropped")
            for _name, entries in reply or ():
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    rev = int(last_id.split("-", 1)[0])
                    value = fields.get(b"value")
                    cursor = rev
                    yield Change(rev, fields[b"kind"].decode(), fields[b"key"].decode(), None if value is None else orjson.loads(value))

    async def aclose(self) -> None:
        await self._redis.aclose()
