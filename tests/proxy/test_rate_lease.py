"""Rate limits across processes through Redis (proxy/routing/rate_lease.py): local allowances
leased in batches from a bucket in a real redis-server, so two gateways (as two workers
or replicas) hold one limit between them, with no Redis call per request."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import redis.asyncio as aioredis

from fngate.proxy.config import GatewayConfig
from fngate.proxy.errors import RateLimited
from fngate.proxy.routing.rate_lease import RedisLeaser
from fngate.proxy.routing.rate_limits import RateLimits
from fngate.proxy.routing.snapshot import KeyGrant, RoutingTable, SnapshotHolder, key_digest
from fngate.proxy.server import Gateway
from tests.support.net import free_port

from .conftest import KEY, route

GRANT = KeyGrant("k", frozenset({"invoke_function"}), subject="alice")


async def _settle(*leasers: RedisLeaser) -> None:
    for _ in range(3):
        await asyncio.sleep(0.02)
        for leaser in leasers:
            await leaser.lease_round()


async def test_two_processes_share_one_limit(redis_url):
    a, b = RedisLeaser(aioredis.from_url(redis_url)), RedisLeaser(aioredis.from_url(redis_url))
    limits = [RateLimits(buckets=a.bucket), RateLimits(buckets=b.bucket)]
    r = route(1, rate_limit=orjson.dumps({"rateLimit": "20-H"}).decode())  # leased 2 at a time
    admitted = 0
    try:
        for i in range(60):
            try:
                limits[i % 2].check(r, GRANT)
                admitted += 1
            except RateLimited as err:
                assert int(dict(err.headers)[b"retry-after"]) >= 1
            await _settle(a, b)
    finally:
        await a.aclose()
        await b.aclose()
    # every token spent came from the one bucket; tokens one process leased and did not spend are the slack
    assert 18 <= admitted <= 20


async def test_redis_unreachable_fails_open(redis_url):
    leaser = RedisLeaser(aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5))
    limits = RateLimits(buckets=leaser.bucket)
    r = route(1, rate_limit=orjson.dumps({"rateLimit": "1-H"}).decode())
    try:
        for _ in range(5):
            limits.check(r, GRANT)  # never raises: NVCF's limiter also lets requests through when it cannot ask
            await leaser.lease_round()
    finally:
        await leaser.aclose()


async def test_two_gateways_on_redis_hold_one_limit(redis_url, echo_up):
    table = RoutingTable.build(
        1,
        [route(echo_up.port, rate_limit=orjson.dumps({"rateLimit": "3-M"}).decode())],
        [(key_digest(KEY), KeyGrant("k1", frozenset({"invoke_function"}), subject="alice"))],
    )
    gateways = []
    for n in range(2):
        holder = SnapshotHolder(table)
        cfg = GatewayConfig(http_port=0, grpc_port=None, admin_port=None, rate_limit_redis=redis_url)
        gw = Gateway(cfg, holder, f"gw-{n}")
        await gw.start()
        gateways.append(gw)
    headers = {"Host": f"{table.functions and next(iter(table.functions))}.invocation.example.com", "Authorization": f"Bearer {KEY}"}
    codes = []
    try:
        async with httpx.AsyncClient(timeout=30) as c:
            for i in range(8):
                r = await c.get(f"http://127.0.0.1:{gateways[i % 2].http_port}/x", headers=headers)
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert 1 <= int(r.headers["retry-after"]) <= 20
                await asyncio.sleep(0.2)  # the leases run in the background
    finally:
        for gw in gateways:
            await gw.stop(grace=1)
    assert codes.count(200) == 3 and codes.count(429) == 5
