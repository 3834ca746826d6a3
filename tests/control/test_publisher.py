"""RoutingPublisher and the internal routes: the store's state becomes a routing
table that reaches the in-process holder, Redis and the long-poll route."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fngate.control import records as R
from fngate.control.internal_api import RedisLoadReader, make_internal_app
from fngate.control.keys import StoredKey
from fngate.control.loadboard import LoadBoard
from fngate.control.publisher import RoutingPublisher
from fngate.control.store.memory import MemoryStore
from fngate.proxy.routing.snapshot import (
    ROUTING_CHANNEL,
    ROUTING_KEY,
    LoadReport,
    RoutingTable,
    RoutingWire,
    SnapshotHolder,
    VersionLoad,
    key_digest,
)
from tests.support.helpers import deploy
from tests.support.keys import function_resource, policy
from tests.support.waiting import wait_for

ADMIN = "nvapi-admin-secret"


async def _instance(store, vid, iid, status="ACTIVE", draining=False, port=7001):
    await store.put(
        R.INSTANCES,
        R.instance_key(vid, iid),
        {"instanceId": iid, "functionVersionId": vid, "instanceStatus": status, "host": "127.0.0.1", "port": port, "draining": draining},
    )


async def test_table_follows_the_store():
    store = MemoryStore()
    fid, vid = await deploy(store, fn_extra={"inferenceUrl": "/grpc"})
    user = StoredKey(
        id="k1",
        digest=key_digest("nvapi-user"),
        suffix="ser",
        owner_id="alice@example.com",
        nca_id="fngate",
        authorizations={"policies": [policy(["invoke_function"], [function_resource(fid), function_resource(fid, vid)])]},
        created_at="2026-01-01T00:00:00Z",
        expires_at="2030-01-01T00:00:00Z",
    )
    await store.put(R.KEYS, "k1", user.to_doc())
    await store.put(R.KEYS, "k2", {**user.to_doc(), "id": "k2", "digest": key_digest("nvapi-suspended"), "status": "SUSPENDED"})
    # a record written before keys followed NVCF's API-keys service
    legacy = {"keyId": "k0", "digest": key_digest("nvapi-legacy"), "scopes": ["invoke_function"], "functionIds": [fid], "ncaId": "fngate"}
    await store.put(R.KEYS, "k0", legacy)
    pub = RoutingPublisher(store, admin_key=ADMIN)
    gateway = SnapshotHolder()
    pub.add_sink(gateway.publish)
    await pub.start()
    try:
        t0 = gateway.table
        route = t0.functions[fid][vid]
        assert route.status == "DEPLOYING" and route.grpc and route.endpoints == () and not route.invokable
        grant = t0.keys[key_digest("nvapi-user")]
        assert (grant.function_ids, grant.version_ids, grant.shared, grant.any_account) == (frozenset({fid}), frozenset(), False, False)
        assert grant.subject == "alice@example.com" and grant.expires_at == 1893456000.0
        assert key_digest("nvapi-suspended") not in t0.keys
        assert t0.keys[key_digest("nvapi-legacy")].function_ids == frozenset({fid})
        assert t0.keys[key_digest(ADMIN)].allows("invoke_function", fid, 0)
        await _instance(store, vid, "i-starting", status="STARTING")
        await _instance(store, vid, "i-ready", port=7002)
        fn = (await store.get(R.FUNCTIONS, R.version_key(fid, vid))).value
        await store.put(R.FUNCTIONS, R.version_key(fid, vid), {**fn, "status": "ACTIVE"})
        await wait_for(lambda: gateway.table.invokable.get(fid))
        [ep] = gateway.table.functions[fid][vid].endpoints
        assert (ep.id, ep.port, ep.draining) == ("i-ready", 7002, False)
        assert gateway.table.version > t0.version
        await _instance(store, vid, "i-ready", port=7002, draining=True)
        await wait_for(lambda: gateway.table.functions[fid][vid].endpoints[0].draining)
    finally:
        await pub.aclose()


async def test_versions_keep_increasing_across_restarts():
    store = MemoryStore()
    first = RoutingPublisher(store)
    t1 = await first.publish_now()
    second = RoutingPublisher(store)
    second.bump_past(t1.version + 10_000_000)  # e.g. what Redis holds from a run with a clock ahead
    t2 = await second.publish_now()
    assert t2.version > t1.version + 10_000_000


async def test_redis_sink_and_load_reader(redis_url):
    import redis.asyncio as aioredis

    store = MemoryStore()
    fid, vid = await deploy(store)
    client = aioredis.from_url(redis_url)
    sub = client.pubsub()
    await sub.subscribe(ROUTING_CHANNEL)
    pub = RoutingPublisher(store)
    pub.add_redis_sink(client)
    table = await pub.publish_now()
    try:
        stored = RoutingTable.from_json(await client.get(ROUTING_KEY))
        assert stored.version == table.version and vid in stored.functions[fid]
        msg = None
        for _ in range(50):
            msg = await sub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg:
                break
        assert msg and int(msg["data"]) == table.version
        board = LoadBoard()
        await client.set("fngate:load:gw-7", LoadReport("gw-7", time.time(), {vid: VersionLoad(queue_depth=4)}).to_json(), ex=10)
        await client.set("fngate:load:garbage", b"{not json", ex=10)
        assert await RedisLoadReader(client, board).read_once() == 1
        assert board.queue_depth(vid) == 4
    finally:
        await sub.aclose()
        await client.aclose()


@pytest.fixture
async def internal():
    holder, board = SnapshotHolder(), LoadBoard()
    app = web.Application()
    app.add_subapp("/internal/v1", make_internal_app(holder, RoutingWire(), board, ADMIN))
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, holder, board
    await client.close()


AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def test_internal_routes_need_the_admin_key(internal):
    client, _, _ = internal
    for headers in ({}, {"Authorization": "Bearer nvapi-wrong"}):
        r = await client.get("/internal/v1/routing?after=0&wait=0", headers=headers)
        assert r.status == 401 and r.content_type == "application/problem+json"


async def test_long_poll_answers_204_then_200_on_a_newer_table(internal):
    client, holder, _ = internal
    holder.publish(RoutingTable(5))
    r = await client.get("/internal/v1/routing?after=5&wait=0.1", headers=AUTH)
    assert r.status == 204
    waiting = asyncio.ensure_future(client.get("/internal/v1/routing?after=5&wait=5", headers=AUTH))
    await asyncio.sleep(0.1)
    holder.publish(RoutingTable(6))
    r = await waiting
    assert r.status == 200 and RoutingTable.from_json(await r.read()).version == 6
    r = await client.get("/internal/v1/routing?after=abc", headers=AUTH)
    assert r.status == 400


async def test_load_reports_reach_the_board(internal):
    client, _, board = internal
    report = LoadReport("gw-1", time.time(), {"v1": VersionLoad(queue_depth=3, queued_ids=["r1"])})
    r = await client.put("/internal/v1/load/gw-1", data=report.to_json(), headers=AUTH)
    assert r.status == 204
    assert board.queue_depth("v1") == 3 and board.position("r1") == ("v1", 1)
    r = await client.put("/internal/v1/load/gw-2", data=report.to_json(), headers=AUTH)
    assert r.status == 400
    r = await client.put("/internal/v1/load/gw-1", data=b"[]", headers=AUTH)
    assert r.status == 400


def test_route_names_the_backend_its_instances_run_on():
    from fngate.control.publisher import build_routes
    from fngate.control.records import Deployment, FunctionVersion, InstanceRecord

    fn = {"id": "f", "versionId": "v", "name": "echo", "status": "ACTIVE", "inferenceUrl": "/echo"}
    inst = {"instanceId": "i1", "functionVersionId": "v", "instanceStatus": "ACTIVE", "host": "127.0.0.1", "port": 7001, "backend": "local"}
    no_backend = {"v": {"deploymentSpecifications": [{"gpu": "H100", "instanceType": "NCP.GPU.H100_1x"}]}}
    [route] = build_routes([FunctionVersion.parse(fn)], {"v": Deployment.parse(no_backend["v"])}, [InstanceRecord.parse(inst)])
    assert route.backend == "local"  # the default backend, as the instance reports it
    named = {"v": {"deploymentSpecifications": [{"gpu": "H100", "backend": "gpu-farm"}]}}
    [route] = build_routes([FunctionVersion.parse(fn)], {"v": Deployment.parse(named["v"])}, [])
    assert route.backend == "gpu-farm"


async def test_a_suspended_owners_keys_leave_the_table_and_come_back():
    """Owner suspension reaches the gateway the way key suspension does: the snapshot no
    longer holds the owner's keys (so the gateway answers 401), and ACTIVE restores them."""
    store = MemoryStore()
    fid, _ = await deploy(store)
    base = StoredKey(
        id="k1",
        digest=key_digest("nvapi-bob-1"),
        suffix="b-1",
        owner_id="bob@example.com",
        nca_id="fngate",
        authorizations={"policies": [policy(["invoke_function"])]},
        created_at="2026-01-01T00:00:00Z",
    )
    await store.put(R.KEYS, "k1", base.to_doc())
    await store.put(R.KEYS, "k2", {**base.to_doc(), "id": "k2", "digest": key_digest("nvapi-bob-2")})
    await store.put(R.KEYS, "k3", {**base.to_doc(), "id": "k3", "digest": key_digest("nvapi-carol"), "owner_id": "carol@example.com"})
    pub = RoutingPublisher(store, admin_key=ADMIN)
    gateway = SnapshotHolder()
    pub.add_sink(gateway.publish)
    await pub.start()
    bob = {key_digest("nvapi-bob-1"), key_digest("nvapi-bob-2")}
    try:
        assert bob <= set(gateway.table.keys)
        owner = {"owner_type": "USER", "owner_id": "bob@example.com", "status_updated_at": "2026-01-02T00:00:00Z"}
        await store.put(R.KEY_OWNERS, "bob@example.com", {**owner, "status": "SUSPENDED"})
        await wait_for(lambda: not bob & set(gateway.table.keys))
        assert key_digest("nvapi-carol") in gateway.table.keys and key_digest(ADMIN) in gateway.table.keys
        await store.put(R.KEY_OWNERS, "bob@example.com", {**owner, "status": "ACTIVE"})
        await wait_for(lambda: bob <= set(gateway.table.keys))
        assert gateway.table.keys[key_digest("nvapi-bob-1")].allows("invoke_function", fid, 0)
    finally:
        await pub.aclose()


async def test_a_versions_rate_limit_reaches_its_route():
    store = MemoryStore()
    limit = {"rateLimit": "10-S,500-M", "perUserRate": "1-S", "exemptedNcaIds": ["nca-x"], "syncCheck": False}
    fid, vid = await deploy(store, fn_extra={"rateLimit": limit})
    other_fid, other_vid = await deploy(store)
    pub = RoutingPublisher(store, admin_key=ADMIN)
    gateway = SnapshotHolder()
    pub.add_sink(gateway.publish)
    await pub.start()
    try:
        assert orjson.loads(gateway.table.functions[fid][vid].rate_limit) == limit
        assert gateway.table.functions[other_fid][other_vid].rate_limit == ""
        fn = (await store.get(R.FUNCTIONS, R.version_key(fid, vid))).value
        await store.put(R.FUNCTIONS, R.version_key(fid, vid), {k: v for k, v in fn.items() if k != "rateLimit"})  # DELETE .../ratelimit/...
        await wait_for(lambda: gateway.table.functions[fid][vid].rate_limit == "")
    finally:
        await pub.aclose()
