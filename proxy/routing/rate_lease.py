"""Rate-limit buckets shared through Redis: one limit across `--workers N` and replicas,
with no Redis call on the request path.

Redis holds the real token bucket of each (version, account[, caller], rate) key. Each
gateway process spends tokens it leased before: a LeasedBucket is a local allowance that
a background task (RedisLeaser) tops up in batches, one pipelined script call per round
for every bucket that runs low. A request only reads and decrements the allowance.

Accuracy (what the README states):
- Every token spent was taken from the shared bucket, except a new bucket's first batch:
  a process that meets a key for the first time admits up to `batch` requests on
  credit before its first lease returns, and charges them to Redis then (the shared
  bucket may go below zero, so later requests anywhere wait for it). So over any span
  the whole fleet admits at most what one bucket would, plus `batch` per process per
  key it newly meets.
- Tokens a process leased but does not spend are not used elsewhere: with uneven traffic
  the fleet may refuse up to (processes - 1) x batch requests a single bucket would take.
- `batch` is a tenth of the rate's count (1 to 100): "10-S" leases 1 at a time, "1000-S" 100.
- Redis unreachable: leases are granted locally (fail open, as NVCF's limiter), each
  process then limits alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from fngate.proxy.routing.rate_limits import Rate

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("fngate.rate_lease")

KEY_PREFIX = "fngate:rl:"
ROUND_INTERVAL = 0.05  # a denied bucket asks again at most this often

# KEYS[1] bucket; ARGV size, per-second, charge (spent on credit), want. Refills by Redis's
# clock, takes the charge (may go below zero), grants up to `want` whole tokens; returns
# {granted, milliseconds until a whole token is back}. Idle keys expire once full again.
_LEASE = """
local size, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local charge, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or size
local at = tonumber(b[2]) or now
tokens = math.min(size, tokens + math.max(0, now - at) * rate) - charge
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((size - tokens) / rate) + 1)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) / rate * 1000) end
return {granted, wait}
"""


def batch_for(rate: Rate) -> int:
    return max(1, min(100, rate.count // 10))


class LeasedBucket:
    """The bucket interface RateLimits uses (`refill`, `wait`, `tokens`, `size`), over a
    leased allowance."""

    __slots__ = ("batch", "capacity", "charge", "key", "leaser", "pending", "per_second", "retry_at", "size", "tokens")

    def __init__(self, leaser: RedisLeaser, key: str, rate: Rate) -> None:
        self.leaser = leaser
        self.key = key
        self.capacity = float(rate.count)  # the shared bucket's size, in Redis
        self.size = float("inf")  # never dropped by RateLimits' pruning: it would come back with credit
        self.per_second = rate.count / rate.period
        self.batch = batch_for(rate)
        self.tokens = float(self.batch)  # credit until the first lease returns
        self.charge = self.batch  # ... charged to Redis with it
        self.retry_at = 0.0  # Redis said no: not before this (time.monotonic())
        self.pending = False
        leaser.want(self)

    def refill(self, now: float) -> float:
        if self.tokens < 1.0 + self.batch / 2 and not self.pending:  # running low: top up in the background
            self.leaser.want(self)
        return self.tokens

    def wait(self) -> float:
        left = self.retry_at - time.monotonic()
        return left if left > 0 else 1.0 / self.per_second

    def granted(self, n: int, wait: float, now: float) -> None:
        self.pending = False
        self.charge = 0
        self.tokens += n
        self.retry_at = now + wait if n == 0 and wait > 0 else 0.0


class RedisLeaser:
    """Tops up LeasedBuckets from Redis off the request path (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, interval: float = ROUND_INTERVAL) -> None:
        self.redis = redis
        self.interval = interval
        self._script: Any = redis.register_script(_LEASE)
        self._wanting: list[LeasedBucket] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def bucket(self, key: tuple[str, ...], rate: Rate, now: float) -> LeasedBucket:
        return LeasedBucket(self, KEY_PREFIX + ":".join(key), rate)

    def want(self, bucket: LeasedBucket) -> None:
        bucket.pending = True
        self._wanting.append(bucket)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.redis.aclose()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.lease_round()
            if self._wanting:  # denied ones wait for their retry time
                await asyncio.sleep(self.interval)
                self._wake.set()

    async def lease_round(self) -> None:
        now = time.monotonic()
        due = [b for b in self._wanting if b.retry_at <= now]
        if not due:
            return
        self._wanting = [b for b in self._wanting if b.retry_at > now]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for b in due:
                    want = max(0, math.ceil(b.batch - b.tokens)) if b.tokens < b.batch else 0
                    await self._script(keys=[b.key], args=[b.capacity, b.per_second, b.charge, want], client=pipe)
                results = await pipe.execute()
        except Exception as exc:  # Redis away: fail open, each process limits alone meanwhile
            log.debug("rate lease failed: %s", exc)
            for b in due:
                b.granted(b.batch, 0.0, now)
            return
        now = time.monotonic()
        for b, (granted, wait_ms) in zip(due, results, strict=True):
            b.granted(int(granted), int(wait_ms) / 1000.0, now)
            if b.retry_at:  # still dry: ask again once a token should be back
                b.pending = True
                self._wanting.append(b)
