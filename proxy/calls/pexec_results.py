"""Pexec results any replica can answer a poll from, when several gateways (`fngate serve`
replicas, `--workers`) share one Redis.

A pexec request still running when its poll window ends (the 202) is announced in Redis
under its request id, and its result is stored there when it ends; both live for NVCF's
tracking window (proxy/calls/pexec.py's TRACKING_SECONDS) from the last write. A job its
gateway gave up on (no poll in time) is marked abandoned (a poll anywhere: 504), and a
delivered result is claimed atomically (a Lua script marks the record delivered): exactly
one poll, on any replica, gets it, and a later poll anywhere gets 404, pexec's retention rules. A status poll that reaches a gateway that does not hold the request
in memory finds it there: in progress (202) until the result is stored, then the result.

Progress: while a held job runs, its gateway looks at the job's progress file every
`progress_interval` (0.5 s: the throttle) and writes an update that changed into the record
(`pct`, `partial`, `pseq`); a poll elsewhere gets the latest one on its 202
(`NVCF-PERCENT-COMPLETE`), and a poll waiting there ends at once when a new one arrives.
Large results: each zip (proxy/calls/pexec_files.py LargeResults) is stored in Redis under
its Location's name for NVCF's 35 min (LOCATION_TTL) before the 302 is answered, so any
replica serves the Location. A zip over SHARED_ZIP_MAX_BYTES (128 MiB, a quarter of
Redis' 512 MiB value limit, and what a download holds in memory) is served by the replica
that built it only; elsewhere its Location answers 502 problem+json saying so.

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
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import orjson

from fngate.proxy.calls.pexec_files import LOCATION_TTL, Progress
from fngate.proxy.errors import ProxyError, StoreUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from fngate.proxy.calls.exchange import Headers
    from fngate.proxy.calls.pexec_files import OutputDir

log = logging.getLogger(__name__)

KEY_PREFIX = "fngate:pexec:"
ZIP_PREFIX = "fngate:pexec-zip:"
SHARED_ZIP_MAX_BYTES = 128 * 1024 * 1024


class SharedZipTooLarge(ProxyError):
    http_status = 502


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

    @property
    def outputs(self) -> OutputDir | None: ...

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
    progress: Progress | None = None  # the latest its gateway published
    progress_seq: int = 0  # how many it published


class SharedResults:
    def __init__(
        self,
        redis: aioredis.Redis,
        ttl: float,
        interval: float = 0.25,
        progress_interval: float = 0.5,
        zip_max_bytes: int = SHARED_ZIP_MAX_BYTES,
    ) -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl))
        self.interval = interval
        self.progress_interval = progress_interval
        self.zip_max_bytes = zip_max_bytes
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
            await self._publish_progress(job, key)
            headers = orjson.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in job.headers])
            await self._write(key, {**ident, "status": b"%d" % job.status, "headers": headers, "body": job.body})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: the result stays answerable where it ran
            log.debug("sharing pexec result %s: %s", key, exc)

    async def _publish_progress(self, job: HeldJob, key: str) -> None:
        """Until the job ends: each changed progress update into the record, at most one
        per progress_interval."""
        outputs = job.outputs
        if outputs is None:
            await job.done.wait()
            return
        seen, seq, last = 0, 0, None
        while not job.done.is_set():
            try:
                await asyncio.wait_for(job.done.wait(), self.progress_interval)
                return
            except TimeoutError:
                pass
            found = outputs.peek(seen)
            if found is None:
                continue
            seen, update = found
            if update == last:
                continue
            last, seq = update, seq + 1
            await self._write(key, {"pct": b"%d" % update.percent, "partial": update.body, "pseq": b"%d" % seq})

    async def note_poll(self, request_id: bytes) -> None:
        """A poll here for a request another gateway runs: it keeps waiting for polls (the
        record lives on for the tracking window, as after any 202)."""
        try:
            await self._write(KEY_PREFIX + request_id.decode("latin-1"), {"polled": b"%f" % time.time()})
        except Exception as exc:
            log.debug("noting a pexec poll %r: %s", request_id, exc)

    async def polled_within(self, request_id: bytes, seconds: float) -> bool:
        """Whether a poll on another gateway came in the last `seconds` (note_poll)."""
        try:
            polled = await self.redis.hget(KEY_PREFIX + request_id.decode("latin-1"), "polled")
            return polled is not None and float(polled) >= time.time() - seconds
        except Exception as exc:  # Redis away: as without it
            log.debug("reading a pexec poll %r: %s", request_id, exc)
            return False

    async def store_zip(self, name: str, path: str) -> None:
        """A large result's zip, for every replica to serve its Location for LOCATION_TTL;
        one over zip_max_bytes leaves only its size (its Location elsewhere: a clear 502).
        Redis away: skipped (served where it was built)."""
        key = ZIP_PREFIX + name
        try:
            size, data = await asyncio.to_thread(_read, path, self.zip_max_bytes)
            fields: dict[str, str | bytes] = {"size": b"%d" % size}
            if data is not None:
                fields["data"] = data
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, LOCATION_TTL)
                await pipe.execute()
        except Exception as exc:
            log.debug("sharing the large result %s: %s", name, exc)

    async def fetch_zip(self, name: str) -> bytes | None:
        """A zip another replica stored; None when absent or expired."""
        try:
            size, data = cast("list[bytes | None]", await self.redis.hmget(ZIP_PREFIX + name, ["size", "data"]))
        except Exception as exc:
            log.debug("fetching the large result %s: %s", name, exc)
            raise StoreUnavailable() from None
        if size is None:
            return None
        if data is None:
            raise SharedZipTooLarge(
                f"the large result is {int(size)} bytes, over the {self.zip_max_bytes} bytes shared across gateway replicas;"
                " only the replica that ran the request serves it"
            )
        return data

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

    async def wait(self, request_id: bytes, seconds: float, progress_seq: int = 0) -> SharedResult | None:
        """The record once it holds a result (or is abandoned) or a progress update newer
        than `progress_seq`, else as it stands after `seconds` (status 0: still running);
        None once it is gone (delivered, aged out)."""
        deadline = time.monotonic() + seconds
        while True:
            found = await self.find(request_id)
            if found is None or found.status or found.abandoned or found.progress_seq > progress_seq:
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
        seq = int(raw.get(b"pseq", b"0"))
        progress = Progress(int(raw[b"pct"]), raw.get(b"partial", b"null")) if seq else None
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):  # not a document this module wrote
        return None
    body, abandoned = raw.get(b"body", b""), raw.get(b"abandoned") == b"1"
    return SharedResult(function_id, version_id or None, status, headers, body, abandoned, progress, seq)


def _read(path: str, limit: int) -> tuple[int, bytes | None]:
    """(size, content) of a file; content None when it is over `limit` bytes."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return size, f.read() if size <= limit else None
