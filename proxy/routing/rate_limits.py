"""Function rate limits (spec part 2, 2.1-2.4), enforced in the gateway process.

A version's `rateLimit` object reaches the gateway in the routing snapshot
(`VersionRoute.rate_limit`, its JSON text). It is parsed once per distinct text into a
RatePolicy; each request then costs a dict lookup per bucket and some arithmetic, no
I/O. The tiers are NVCF's (all that apply must allow):

- account (NCA) tier, exactly one of: `perNcaIdRate[<caller's NCA>]` when it names the
  caller's account, else the global `rateLimit` unless the caller's account is in
  `exemptedNcaIds`;
- caller tier: `perUserRate` for each distinct caller (the key's owner, so keys of one
  owner share it), on top of the account tier.

Every entry of a rate string (`10-S,500-M`: count and unit S/M/H/D) is one token
bucket per (version, account[, caller]): it holds at most `count` tokens and refills
`count` per period. NVCF counts in fixed windows instead; a bucket never lets through
the 2 x count a fixed window allows across a window edge, and refills smoothly.

The buckets are local to the process by default; with the store on Redis they are local
allowances leased in batches from buckets in Redis (proxy/routing/rate_lease.py), so one limit
holds across `--workers N` and replicas. Either way a request makes no I/O.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson

from fngate.proxy.errors import RateLimited
from fngate.proxy.routing.snapshot import KeyGrant, VersionRoute

UNIT_SECONDS = {"S": 1.0, "M": 60.0, "H": 3600.0, "D": 86400.0}
_ENTRY = re.compile(r"\s*([1-9][0-9]*)-([SMHD])\s*")
MAX_BUCKETS = 100_000  # past this, buckets that are full again (as good as new) are dropped


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    period: float  # seconds
    text: str  # "10-S": part of the bucket's key, so a changed rate starts a fresh bucket


def parse_rates(text: str) -> tuple[Rate, ...]:
    """`"10-S, 500-M"` -> its entries; a unit given twice keeps the stricter (NVCF's
    limiter does; the management API rejects it already). ValueError when malformed."""
    by_unit: dict[str, Rate] = {}
    for part in text.split(","):
        m = _ENTRY.fullmatch(part)
        if m is None:
            raise ValueError(f"not a rate: {text!r}")
        count, unit = int(m[1]), m[2]
        old = by_unit.get(unit)
        if old is None or count < old.count:
            by_unit[unit] = Rate(count, UNIT_SECONDS[unit], f"{count}-{unit}")
    return tuple(by_unit.values())


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """One version's `rateLimit` object, parsed."""

    rates: tuple[Rate, ...] = ()  # the global `rateLimit`
    exempted: frozenset[str] = frozenset()  # exemptedNcaIds
    per_nca: Mapping[str, tuple[Rate, ...]] | None = None  # perNcaIdRate
    per_user: tuple[Rate, ...] = ()  # perUserRate

    @classmethod
    def from_json(cls, text: str) -> RatePolicy | None:
        """None for an empty or unreadable object: the limit is then not enforced (as
        NVCF's limiter, which fails open)."""
        try:
            doc = orjson.loads(text)
            if not isinstance(doc, dict):
                return None
            per_nca = doc.get("perNcaIdRate") or {}
            policy = cls(
                rates=parse_rates(doc["rateLimit"]) if doc.get("rateLimit") else (),
                exempted=frozenset(str(n) for n in doc.get("exemptedNcaIds") or ()),
                per_nca={str(n): parse_rates(r) for n, r in per_nca.items()} or None,
                per_user=parse_rates(doc["perUserRate"]) if doc.get("perUserRate") else (),
            )
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            return None
        return policy if policy.rates or policy.per_nca or policy.per_user else None

    def account_rates(self, nca_id: str) -> tuple[Rate, ...]:
        per_nca = self.per_nca
        if per_nca is not None:
            rates = per_nca.get(nca_id)
            if rates is not None:
                return rates
        return () if nca_id in self.exempted else self.rates


class TokenBucket(Protocol):
    """What RateLimits needs of a bucket: `refill(now)` -> whole tokens available now,
    `wait()` -> seconds until one is back; it takes a token with `tokens -= 1`."""

    tokens: float
    size: float

    def refill(self, now: float) -> float: ...
    def wait(self) -> float: ...


BucketFactory = Callable[[tuple[str, ...], Rate, float], TokenBucket]


class Bucket:
    """A token bucket in this process."""

    __slots__ = ("at", "per_second", "size", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.size = float(rate.count)
        self.per_second = rate.count / rate.period
        self.tokens = self.size
        self.at = now

    def refill(self, now: float) -> float:
        tokens = min(self.size, self.tokens + (now - self.at) * self.per_second)
        self.tokens, self.at = tokens, now
        return tokens

    def wait(self) -> float:
        """Seconds until it holds a whole token again."""
        return (1.0 - self.tokens) / self.per_second


class RateLimits:
    """The gateway's buckets. `check` raises RateLimited (429 with Retry-After) when a
    bucket of any applicable tier is empty; a refused request takes no token from any."""

    __slots__ = ("_buckets", "_clock", "_make", "_policies", "on_limited")

    def __init__(
        self,
        on_limited: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        buckets: BucketFactory | None = None,
    ) -> None:
        self._policies: dict[str, RatePolicy | None] = {}
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._clock = clock
        self._make: BucketFactory = buckets or _local_bucket
        self.on_limited = on_limited  # called with the function id of each refused request

    def use_buckets(self, make: BucketFactory) -> None:
        """From now on, new buckets come from `make` (the Redis-leased ones)."""
        self._make = make
        self._buckets.clear()

    def bucket(self, key: tuple[str, ...], rate: Rate, now: float) -> TokenBucket:
        """A new bucket from the current factory (the LLM token limits share it: proxy/llm/)."""
        return self._make(key, rate, now)

    def policy(self, text: str) -> RatePolicy | None:
        try:
            return self._policies[text]
        except KeyError:
            if len(self._policies) >= 4096:  # old texts of changed policies
                self._policies.clear()
            policy = self._policies[text] = RatePolicy.from_json(text)
            return policy

    def check(self, route: VersionRoute, grant: KeyGrant, callers: bool = True) -> None:
        """`callers` False: the account tier only (gRPC, where NVCF's proxy names no caller)."""
        if not route.rate_limit:
            return
        policy = self.policy(route.rate_limit)
        if policy is None:
            return
        vid, nca = route.version_id, grant.nca_id
        keys: list[tuple[tuple[str, ...], Rate]] = [((nca, vid, r.text), r) for r in policy.account_rates(nca)]
        if callers and policy.per_user and grant.subject:
            keys += [(("user", grant.subject, nca, vid, r.text), r) for r in policy.per_user]
        if not keys:
            return
        now = self._clock()
        buckets = self._buckets
        wait = 0.0
        taken = []
        for key, rate in keys:
            bucket = buckets.get(key)
            if bucket is None:
                if len(buckets) >= MAX_BUCKETS:
                    self._prune(now)
                bucket = buckets[key] = self._make(key, rate, now)
            if bucket.refill(now) < 1.0:
                wait = max(wait, bucket.wait())
            taken.append(bucket)
        if wait > 0.0:
            if self.on_limited is not None:
                self.on_limited(route.function_id)
            raise RateLimited(headers=((b"retry-after", b"%d" % max(1, math.ceil(wait))),))
        for bucket in taken:
            bucket.tokens -= 1.0

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        for key in [k for k, b in buckets.items() if b.refill(now) >= b.size]:
            del buckets[key]


def _local_bucket(key: tuple[str, ...], rate: Rate, now: float) -> TokenBucket:
    return Bucket(rate, now)
