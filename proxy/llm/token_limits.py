"""Token rate limits of LLM models (`llmConfig.tokenRateLimit`, spec part 2, 8.6).

`1000-S,50000-H`: entries `<n>-<unit>`, units S, M, H, D, W. Each entry is one token
bucket per (caller's account, function), as NVCF keys its counter
(`nvcf:{callerNcaId}:routing_key:{functionId}`; the model name is not part of it).

Admission and adjustment: a request is admitted while every bucket of its model holds
at least a token (none is in debt), and its *estimate* (prompt characters / 4, plus
its max_tokens) is charged at once, so concurrent requests see it. When the response
ends, the difference to the usage the instance reported is charged (or given back);
a bucket may so go below zero, and the next requests wait until it refills. Without
reported usage the estimate stands.

The buckets are the function rate limits' (proxy/routing/rate_limits.py): local to the
process, or leased in batches from Redis (proxy/routing/rate_lease.py) when the store
is Redis, so one budget holds across workers and replicas with no Redis call on the
request path."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from fngate.proxy.llm.errors import LlmError
from fngate.proxy.routing.rate_limits import Rate, TokenBucket

UNIT_SECONDS = {"S": 1.0, "M": 60.0, "H": 3600.0, "D": 86400.0, "W": 604800.0}
_ENTRY = re.compile(r"\s*([1-9][0-9]*)-([SMHDW])\s*")
RATE_LIMITED = "rate limit exceeded"
MAX_BUCKETS = 100_000

BucketMaker = Callable[[tuple[str, ...], Rate, float], TokenBucket]


def parse_token_rates(text: str) -> tuple[Rate, ...]:
    """`"1000-S, 5000-M"` -> its entries; ValueError when malformed or a unit repeats."""
    rates: dict[str, Rate] = {}
    for part in str(text).split(","):
        m = _ENTRY.fullmatch(part)
        if m is None:
            raise ValueError(f"not a token rate: {text!r}")
        unit = m[2]
        if unit in rates:
            raise ValueError(f"unit {unit} given twice in {text!r}")
        rates[unit] = Rate(int(m[1]), UNIT_SECONDS[unit], f"{m[1]}-{unit}")
    return tuple(rates.values())


def go_duration(seconds: float) -> bytes:
    """Go's time.Duration text as NVCF's X-Ratelimit-Reset-Tokens gives it, at least 1ms."""
    ms = max(1, math.ceil(seconds * 1000))
    if ms < 1000:
        return b"%dms" % ms
    s = ms / 1000
    if s < 60:
        return (b"%.3f" % s).rstrip(b"0").rstrip(b".") + b"s"
    minutes, rest = divmod(s, 60)
    if minutes < 60:
        return b"%dm" % minutes + (b"%.3f" % rest).rstrip(b"0").rstrip(b".") + b"s"
    hours, minutes = divmod(minutes, 60)
    return b"%dh%dm" % (hours, minutes) + (b"%.3f" % rest).rstrip(b"0").rstrip(b".") + b"s"


class TokenCharge:
    """What one admitted request took from its buckets, to be settled at its end."""

    __slots__ = ("buckets", "charged")

    def __init__(self, buckets: list[TokenBucket], charged: int) -> None:
        self.buckets = buckets
        self.charged = charged

    def settle(self, used: int | None) -> None:
        """The usage the instance reported (None: none; the estimate stands)."""
        if used is None or not self.buckets:
            return
        delta = used - self.charged
        self.charged = used
        for b in self.buckets:
            b.tokens -= delta
        self.buckets = []


NO_CHARGE = TokenCharge([], 0)


class TokenLimits:
    """`admit` raises the 429 of 2.4 or returns the request's TokenCharge."""

    __slots__ = ("_buckets", "_clock", "make", "on_limited")

    def __init__(self, make: BucketMaker, clock: Callable[[], float] = time.monotonic) -> None:
        self.make = make  # the engine's bucket factory: local, or leased from Redis
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._clock = clock
        self.on_limited: Callable[[str], None] | None = None

    def admit(self, rates: tuple[Rate, ...], nca_id: str, function_id: str, estimate: int, openai: bool = False) -> TokenCharge:
        if not rates:
            return NO_CHARGE
        now = self._clock()
        buckets = self._buckets
        taken: list[TokenBucket] = []
        wait = 0.0
        limit = remaining = None
        for rate in rates:
            key = ("llm", nca_id, "routing_key", function_id, rate.text)
            bucket = buckets.get(key)
            if bucket is None:
                if len(buckets) >= MAX_BUCKETS:
                    buckets.clear()  # buckets come back full: at worst a burst once
                bucket = buckets[key] = self.make(key, rate, now)
            have = bucket.refill(now)
            if have < 1.0:
                wait = max(wait, bucket.wait())
            if remaining is None or have < remaining:
                limit, remaining = rate.count, have
            taken.append(bucket)
        if wait > 0.0:
            if self.on_limited is not None:
                self.on_limited(function_id)
            headers = [
                (b"retry-after", b"%d" % max(1, math.ceil(wait))),
                (b"x-ratelimit-limit-tokens", b"%d" % (limit or 0)),
                (b"x-ratelimit-remaining-tokens", b"0"),
                (b"x-ratelimit-reset-tokens", go_duration(wait)),
            ]
            if wait > 60:
                headers.append((b"x-should-retry", b"false"))
            raise LlmError(429, RATE_LIMITED, tuple(headers), openai)
        for b in taken:
            b.tokens -= estimate
        return TokenCharge(taken, estimate)
