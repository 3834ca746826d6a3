"""Routing for gateway processes other than the control plane's own: the internal
API long-poll, Redis (key + nudge + resync), and --workers N processes on one port."""

from __future__ import annotations

import socket
import time

import httpx
import redis.asyncio as aioredis
from aiohttp import web

from fngate.control.internal_api import make_internal_app
from fngate.control.loadboard import LoadBoard
from fngate.proxy.config import GatewayConfig
from fngate.proxy.ops.workers import WorkerPool
from fngate.proxy.routing.snapshot import (
    ROUTING_CHANNEL,
    ROUTING_KEY,
    KeyGrant,
    LoadReport,
    RoutingTable,
    RoutingWire,
    SnapshotHolder,
    VersionLoad,
    key_digest,
)
from fngate.proxy.routing.sources import ControlHttpSource, RedisSource
from tests.support.waiting import wait_for

from .conftest import KEY, VID, route

ADMIN = "nvapi-admin-for-tests"
GRANTS = [(key_digest(KEY), KeyGrant("k1", frozenset({"invoke_function"})))]


async def test_control_http_source_follows_the_control_plane(echo_up):
    control_holder, board = SnapshotHolder(), LoadBoard()
    app = web.Application()
    app.add_subapp("/internal/v1", make_internal_app(control_holder, RoutingWire(), board, ADMIN))
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    holder = SnapshotHolder()
    # a long poll of a minute: a change that arrives within the (generous) wait below was
    # pushed by the control plane, not picked up by the next poll
    source = ControlHttpSource(f"http://127.0.0.1:{sock.getsockname()[1]}", ADMIN, holder, "gw-a", wait=60)
    source.start()
    try:
        control_holder.publish(RoutingTable.build(1, [route(echo_up.port)], GRANTS))
        await wait_for(lambda: holder.table.version == 1, what="the first table")
        control_holder.publish(RoutingTable.build(2, [route(echo_up.port, status="DEGRADED")], GRANTS))
        await wait_for(lambda: holder.table.version == 2, timeout=20, what="the change, pushed to the waiting long poll")
        assert holder.table.functions[route(1).function_id][VID].status == "DEGRADED"
        await source.send_load(LoadReport("gw-a", time.time(), {VID: VersionLoad(queue_depth=3)}))
        assert board.queue_depth(VID) == 3
    finally:
        await source.aclose()
        await runner.cleanup()


async def test_redis_source_nudge_resync_and_load(redis_url, echo_up):
    client = aioredis.from_url(redis_url)
    holder = SnapshotHolder()
    await client.set(ROUTING_KEY, RoutingTable.build(5, [route(echo_up.port)], GRANTS).to_json())
    # resync once a minute: a change seen within the (generous) wait below came by the nudge
    source = RedisSource(redis_url, holder, "gw-r", resync=60)
    resyncing = RedisSource(redis_url, SnapshotHolder(), "gw-r2", resync=0.5)
    source.start()
    try:
        await wait_for(lambda: holder.table.version == 5, what="the first table")
        await client.set(ROUTING_KEY, RoutingTable.build(6, [route(echo_up.port)], GRANTS).to_json())
        await client.publish(ROUTING_CHANNEL, "6")
        await wait_for(lambda: holder.table.version == 6, timeout=20, what="the change, by the nudge")
        # a lost nudge: the periodic resync still picks the change up
        resyncing.start()
        await wait_for(lambda: resyncing.holder.table.version == 6, what="the resyncing source's first table")
        await client.set(ROUTING_KEY, RoutingTable.build(7, [route(echo_up.port)], GRANTS).to_json())
        await wait_for(lambda: resyncing.holder.table.version == 7, timeout=20, what="the change, by the resync")
        await source.send_load(LoadReport("gw-r", time.time(), {VID: VersionLoad(in_flight=2)}))
        raw = await client.get("fngate:load:gw-r")
        assert LoadReport.from_json(raw).versions[VID].in_flight == 2
        assert 0 < await client.ttl("fngate:load:gw-r") <= 10
    finally:
        await source.aclose()
        await resyncing.aclose()
        await client.aclose()


async def test_worker_processes_share_the_port(redis_url, echo_up):
    client = aioredis.from_url(redis_url)
    await client.set(ROUTING_KEY, RoutingTable.build(1, [route(echo_up.port, max_concurrency=64)], GRANTS).to_json())
    pool = WorkerPool(GatewayConfig(http_port=0, grpc_port=None, admin_port=0, workers=2, load_report_interval=0.2), {"redis": redis_url})
    await pool.start()
    try:
        headers = {"Host": f"{route(1).function_id}.invocation.test", "Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient() as c:
            for _ in range(20):  # new connections spread over the workers
                async with httpx.AsyncClient() as one:
                    r = await one.get(f"http://127.0.0.1:{pool.http_port}/", headers=headers)
                    assert r.status_code == 200
            metrics = (await c.get(f"http://127.0.0.1:{pool.admin_port}/readyz")).json()
            assert metrics["ready"] is True

            async def served_by_worker() -> dict[str, int] | None:  # from the load reports, every 0.2 s
                keys = sorted(k.decode() for k in await client.keys("fngate:load:*"))
                by_worker = {k: LoadReport.from_json(await client.get(k)).versions.get(VID, VersionLoad()).requests for k in keys}
                return by_worker if len(by_worker) == 2 and sum(by_worker.values()) == 20 else None

            await wait_for(served_by_worker, what="both workers' load reports counting the 20 requests")
            # a routing change reaches every worker
            await client.set(ROUTING_KEY, RoutingTable.build(2, [route(echo_up.port, status="DEGRADED")], GRANTS).to_json())
            await client.publish(ROUTING_CHANNEL, "2")

            async def every_worker_has_version_2() -> bool:
                workers = (await c.get(f"http://127.0.0.1:{pool.admin_port}/readyz")).json()["workers"]
                return len(workers) == 2 and all(w.get("routingVersion") == 2 for w in workers.values())

            await wait_for(every_worker_has_version_2, what="routing version 2 in both workers")
        for _ in range(6):
            async with httpx.AsyncClient() as one:
                assert (await one.get(f"http://127.0.0.1:{pool.http_port}/", headers=headers)).status_code == 400
    finally:
        await pool.stop(grace=1)
        await client.aclose()


async def test_a_worker_whose_parent_is_gone_stops(redis_url, echo_up):
    """A gateway worker started for a parent that is no longer its parent (killed while
    the worker started) stops by itself instead of serving on as an orphan."""
    import asyncio
    import dataclasses
    import json
    import sys

    from tests.support.net import free_port

    client = aioredis.from_url(redis_url)
    await client.set(ROUTING_KEY, RoutingTable.build(3, [route(echo_up.port)], GRANTS).to_json())
    await client.aclose()
    spec = {
        "config": dataclasses.asdict(GatewayConfig(host="127.0.0.1", http_port=0, grpc_port=None, admin_port=None)),
        "source": {"redis": redis_url},
        "gateway_id": "gw-orphan",
        "index": 0,
        "peers": [free_port()],
        "parent": 1,  # not this test's pid: as if the real parent had died and init adopted it
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fngate.proxy.ops.workers", json.dumps(spec), stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).startswith(b"ready")
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
