"""Pexec results any replica can answer a poll from, when several gateways (`fngate serve`
replicas, `--workers`) share one Redis.

A pexec request still running when its poll window ends (the 202) is announced in Redis
under its request id, and its result is stored there when it ends; both live for NVCF's
tracking window (proxy/calls/pexec.py's TRACKING_SECONDS) from the last write. A job its
gateway gave up on (no poll in time) is marked abandoned (a poll anywhere: 504), and a
delivered result is claimed atomically (a Lua script marks the record delivered): exactly
one poll, on any replica, gets it, and a later poll anywhere gets 404, pexec's retention rules. A status poll that reaches a gateway that does not hold the request
in memory finds it there: in progress (202) until the result is stored, then the result.

This is the storage seam of proxy/calls/pexec.py (`Pexec(shared=...)`): the gateway that
ran a request still answers its own polls from memory; only requests that outlive their
first window touch Redis (one write at the 202, one with the result), and a poll for an
id held elsewhere reads once per `interval` while it waits. A request answered within
its first window never does. Redis away: announcing and storing are skipped (logged at
debug), and a poll for an id this gateway does not hold is answered 503 with a
`Retry-After` (problem+json): it may still run elsewhere, so 404 (gone) would be wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import orjson

from fngate.proxy.errors import StoreUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from fngate.proxy.calls.exchange import Headers

log = logging.getLogger(__name__)

KEY_PREFIX = "fngate:pexec:"
RUNNING = b"0"  # the status field while the request runs

# A result taken by a poll elsewhere: when the record holds one, not yet delivered, mark it
# delivered (a tombstone for the tracking window: later polls 404) and return its fields.
_CLAIM = """
local s = redis.call('HGET', KEYS[1], 'status')
if (not s) or s == '0' or redis.call('HGET', KEYS[1], 'delivered') == '1' then return false end
local all = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], 'delivered', '1', 'body', '', 'headers', '[]')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return all
"""
# The running gateway delivers from memory: it wins unless a poll elsewhere took the stored copy.
_CLAIM_HELD = """
if redis.call('HGET', KEYS[1], 'delivered') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'delivered', '1', 'body', '', 'headers', '[]')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


class HeldJob(Protocol):
    """What is shared of a pexec job (proxy/calls/pexec.py's Job)."""

    @property
    def request_id(self) -> bytes: ...
    @property
    def function_id(self) -> str: ...
    @property
    def version_id(self) -> str | None: ...

    status: int
    headers: Headers
    body: bytes
    done: asyncio.Event


@dataclass(frozen=True, slots=True)
class SharedResult:
    function_id: str
    version_id: str | None
    status: int  # 0 while the request runs
    headers: Headers
    body: bytes
    abandoned: bool = False  # its gateway gave up waiting for a poll


class SharedResults:
    def __init__(self, redis: aioredis.Redis, ttl: float, interval: float = 0.25) -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl))
        self.interval = interval
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding: dict[bytes, asyncio.Task[None]] = {}  # request id -> its hold task

    @classmethod
    def from_url(cls, url: str, ttl: float) -> SharedResults:
        import redis.asyncio as aioredis

        return cls(aioredis.from_url(url), ttl)

    def hold(self, job: HeldJob) -> None:
        """Announce a job that outlived its first window, and store its result once it ends."""
        rid = job.request_id
        task = self._spawn(self._hold(job))
        self._holding[rid] = task

        def release(done: asyncio.Task[None]) -> None:
            if self._holding.get(rid) is done:
                del self._holding[rid]

        task.add_done_callback(release)

    def abandon(self, job: HeldJob) -> None:
        """Its gateway gave up on the job: polls anywhere get 504 until the record ages out."""
        ident: dict[str, str | bytes] = {"fid": job.function_id, "vid": job.version_id or "", "status": RUNNING, "abandoned": "1"}
        self._spawn(self._after_hold(job.request_id, lambda key: self._write(key, ident)))

    async def claim_held(self, request_id: bytes) -> bool:
        """The gateway that ran the request delivers its result from memory: True when no
        poll elsewhere claimed the stored copy first (exactly one poll gets a result). The
        hold task is stopped first, so its late write cannot bring the record back. Redis
        away: True (the result is delivered where it ran rather than lost)."""
        task = self._holding.pop(request_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            got = await self.redis.eval(_CLAIM_HELD, 1, KEY_PREFIX + request_id.decode("latin-1"), self.ttl)
        except Exception as exc:
            log.debug("claiming pexec result %r: %s", request_id, exc)
            return True
        return bool(got)

    async def claim(self, request_id: bytes) -> SharedResult | None:
        """Take a stored result for this poll, atomically: exactly one poll, on any
        replica, gets it; the record stays as a tombstone (later polls: 404). None when
        it is running, delivered or gone; StoreUnavailable when Redis cannot be reached."""
        try:
            raw = await self.redis.eval(_CLAIM, 1, KEY_PREFIX + request_id.decode("latin-1"), self.ttl)
        except Exception as exc:
            log.debug("claiming pexec result %r: %s", request_id, exc)
            raise StoreUnavailable() from None
        if not raw:
            return None
        it = iter(cast("list[bytes]", raw))
        return _parse(dict(zip(it, it, strict=True)))

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name="pexec-share")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _after_hold(self, request_id: bytes, step: Callable[[str], Awaitable[object]]) -> None:
        """Stop the hold task first (so its late write cannot undo this step), then run it."""
        task = self._holding.pop(request_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        key = KEY_PREFIX + request_id.decode("latin-1")
        try:
            await step(key)
        except Exception as exc:  # Redis away: as in _hold
            log.debug("updating pexec result %s: %s", key, exc)

    async def _hold(self, job: HeldJob) -> None:
        key = KEY_PREFIX + job.request_id.decode("latin-1")
        ident = {"fid": job.function_id, "vid": job.version_id or ""}
        try:
            await self._write(key, {**ident, "status": RUNNING})
            await job.done.wait()
            headers = orjson.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in job.headers])
            await self._write(key, {**ident, "status": b"%d" % job.status, "headers": headers, "body": job.body})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: the result stays answerable where it ran
            log.debug("sharing pexec result %s: %s", key, exc)

    async def _write(self, key: str, fields: dict[str, str | bytes]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def find(self, request_id: bytes) -> SharedResult | None:
        try:
            # a client without decode_responses: field names and values are bytes
            raw = cast("dict[bytes, bytes]", await self.redis.hgetall(KEY_PREFIX + request_id.decode("latin-1")))
        except Exception as exc:  # the poll cannot know: 503 + Retry-After (never 404: the request may run on)
            log.debug("looking up pexec result %r: %s", request_id, exc)
            raise StoreUnavailable() from None
        return _parse(raw)

    async def wait(self, request_id: bytes, seconds: float) -> SharedResult | None:
        """The record once it holds a result (or is abandoned), else as it stands after
        `seconds` (status 0: still running); None once it is gone (delivered, aged out)."""
        deadline = time.monotonic() + seconds
        while True:
            found = await self.find(request_id)
            if found is None or found.status or found.abandoned:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return found
            await asyncio.sleep(min(self.interval, left))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()


def _parse(raw: dict[bytes, bytes]) -> SharedResult | None:
    """A record as find/claim read it; None when absent, delivered or not one this module wrote."""
    if not raw or b"status" not in raw or raw.get(b"delivered") == b"1":
        return None
    try:
        status = int(raw[b"status"])
        headers: Headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in orjson.loads(raw.get(b"headers", b"[]"))]
        function_id, version_id = raw[b"fid"].decode(), raw[b"vid"].decode()
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):  # not a document this module wrote
        return None
    return SharedResult(function_id, version_id or None, status, headers, raw.get(b"body", b""), raw.get(b"abandoned") == b"1")
