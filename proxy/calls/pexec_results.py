"""Pexec results any replica can answer a poll from, when several gateways (`fngate serve`
replicas, `--workers`) share one Redis.

A pexec request still running when its poll window ends (the 202) is announced in Redis
under its request id, and its result is stored there when it ends; both live for NVCF's
tracking window (proxy/calls/pexec.py's TRACKING_SECONDS) from the last write. A job its
gateway gave up on (no poll in time) is marked abandoned (a poll anywhere: 504), and a
delivered result is deleted (a later poll anywhere: 404), pexec's retention rules. A status poll that reaches a gateway that does not hold the request
in memory finds it there: in progress (202) until the result is stored, then the result.

This is the storage seam of proxy/calls/pexec.py (`Pexec(shared=...)`): the gateway that
ran a request still answers its own polls from memory; only requests that outlive their
first window touch Redis (one write at the 202, one with the result), and a poll for an
id held elsewhere reads once per `interval` while it waits. A request answered within
its first window never does. Redis away: announcing and storing are skipped (logged at
debug), and a poll for a foreign id is answered as unknown, as without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import orjson

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from fngate.proxy.calls.exchange import Headers

log = logging.getLogger(__name__)

KEY_PREFIX = "fngate:pexec:"
RUNNING = b"0"  # the status field while the request runs


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

    def forget(self, request_id: bytes) -> None:
        """The result was delivered: a later poll anywhere is answered 404."""
        self._spawn(self._after_hold(request_id, lambda key: self.redis.delete(key)))

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
        except Exception as exc:
            log.debug("looking up pexec result %r: %s", request_id, exc)
            return None
        if not raw or b"status" not in raw:
            return None
        try:
            status = int(raw[b"status"])
            headers: Headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in orjson.loads(raw.get(b"headers", b"[]"))]
            function_id, version_id = raw[b"fid"].decode(), raw[b"vid"].decode()
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):  # not a document this module wrote
            return None
        return SharedResult(function_id, version_id or None, status, headers, raw.get(b"body", b""), raw.get(b"abandoned") == b"1")

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
