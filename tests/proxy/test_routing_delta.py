"""Routing deltas: a gateway that holds the table a new one was built after gets only
the changes, over the internal long poll and over Redis, and ends with the same table
as one that read the whole."""

from __future__ import annotations

import socket

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from fngate.control.internal_api import make_internal_app
from fngate.control.loadboard import LoadBoard
from fngate.proxy.routing.snapshot import (
    ROUTING_DELTA_KEY,
    ROUTING_KEY,
    ROUTING_VERSION_KEY,
    Endpoint,
    KeyGrant,
    RoutingTable,
    RoutingWire,
    SnapshotHolder,
    VersionRoute,
    key_digest,
)
from fngate.proxy.routing.sources import ControlHttpSource, RedisSource
from tests.support.waiting import wait_for

ADMIN = "nvapi-admin-for-tests"
INVOKE = frozenset({"invoke_function"})


def _route(fid: str, vid: str, status: str = "ACTIVE", port: int = 9000) -> VersionRoute:
    return VersionRoute(fid, vid, fid, status, endpoints=(Endpoint(f"{vid}-i", "127.0.0.1", port),))


def _before() -> RoutingTable:
    routes = [_route(f"f{i}", f"v{i}") for i in range(50)] + [_route("f0", "v0b", "DEPLOYING")]
    keys = [(key_digest(f"nvapi-{i}"), KeyGrant(f"k{i}", INVOKE)) for i in range(3)]
    return RoutingTable.build(10, routes, keys)


def _after() -> RoutingTable:
    """From _before: f0's second version became ACTIVE, f1 went away, f50 arrived, f2
    moved to another port; key k1 was revoked, k0's scopes changed, k9 is new."""
    routes = [r for fid, versions in _before().functions.items() if fid not in ("f0", "f1", "f2") for r in versions.values()]
    routes += [_route("f0", "v0"), _route("f0", "v0b"), _route("f2", "v2", port=9100), _route("f50", "v50")]
    keys = [
        (key_digest("nvapi-0"), KeyGrant("k0", INVOKE | {"list_functions"})),
        (key_digest("nvapi-2"), KeyGrant("k2", INVOKE)),
        (key_digest("nvapi-9"), KeyGrant("k9", INVOKE)),
    ]
    return RoutingTable.build(11, routes, keys)


def _same(a: RoutingTable, b: RoutingTable) -> None:
    assert a.version == b.version
    assert {f: dict(v) for f, v in a.functions.items()} == {f: dict(v) for f, v in b.functions.items()}
    assert dict(a.keys) == dict(b.keys)
    assert {f: set(v) for f, v in a.invokable.items() if v} == {f: set(v) for f, v in b.invokable.items() if v}


def test_a_delta_carries_only_the_changes_and_rebuilds_the_new_table():
    before, after = _before(), _after()
    delta = before.delta_json(after)
    doc = orjson.loads(delta)
    assert doc["base"] == 10 and doc["version"] == 11
    assert sorted({r["function_id"] for r in doc["routes"]}) == ["f0", "f2", "f50"]
    assert doc["gone"] == ["f1"]
    assert sorted(g["key_id"] for _, g in doc["keys"]) == ["k0", "k9"]
    assert doc["gone_keys"] == [key_digest("nvapi-1")]
    assert len(delta) < len(after.to_json()) / 5
    applied = before.apply_json(delta)
    assert applied is not None
    _same(applied, after)
    assert [r.version_id for r in applied.invokable["f0"]] == ["v0", "v0b"]
    assert "f1" not in applied.invokable and applied.functions["f2"]["v2"].endpoints[0].port == 9100
    assert applied.functions["f3"] is before.functions["f3"]  # what did not change is shared, not copied


def test_a_delta_from_another_table_is_refused_and_an_old_one_changes_nothing():
    before, after = _before(), _after()
    delta = before.delta_json(after)
    assert RoutingTable(9).apply_json(delta) is None  # built after a table this one is not
    assert after.apply_json(delta) is after  # nothing newer
    whole = RoutingTable(3).apply_json(after.to_json())
    assert whole is not None
    _same(whole, after)


def test_the_wire_encodes_each_form_once_and_answers_by_what_the_gateway_holds():
    wire = RoutingWire()
    wire.publish(_before())
    assert wire.delta() is None  # nothing was published before it
    assert wire.since(10) == wire.since(0) == wire.full()
    wire.publish(_after())
    assert orjson.loads(wire.since(10))["base"] == 10
    assert wire.since(10) is wire.since(10)  # encoded once
    assert "base" not in orjson.loads(wire.since(3))  # a gateway further behind gets the whole table
    assert wire.publish(_before()) is False


async def test_the_long_poll_sends_a_gateway_the_delta():
    holder, wire = SnapshotHolder(), RoutingWire()
    app = web.Application()
    app.add_subapp("/internal/v1", make_internal_app(holder, wire, LoadBoard(), ADMIN))
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    gateway = SnapshotHolder()
    source = ControlHttpSource(f"http://127.0.0.1:{sock.getsockname()[1]}", ADMIN, gateway, "gw-d", wait=60)
    answers: list[bytes] = []
    try:
        for table in (_before(), _after()):
            wire.publish(table)
            holder.publish(table)
            answers.append(wire.since(gateway.table.version))
            await source.fetch_once(5)
        _same(gateway.table, _after())
        assert "base" not in orjson.loads(answers[0]) and orjson.loads(answers[1])["base"] == 10
    finally:
        await source.aclose()
        await runner.cleanup()


async def test_redis_gateways_follow_by_delta(redis_url):
    """After the second publish the whole table in Redis is made unreadable: a gateway
    that held the first table still reaches the second, so it read only the delta."""
    from fngate.control.publisher import RoutingPublisher
    from fngate.control.store.memory import MemoryStore

    client = aioredis.from_url(redis_url)
    publisher = RoutingPublisher(MemoryStore())
    publisher.add_redis_sink(client)
    follower = RedisSource(redis_url, SnapshotHolder(), "gw-x", resync=0.2)
    try:
        first = await publisher.publish_now()
        follower.start()
        await wait_for(lambda: follower.holder.table.version == first.version, what="the first table")
        await follower.aclose()
        second = await publisher.publish_now()
        assert int(await client.get(ROUTING_VERSION_KEY)) == second.version
        assert orjson.loads(await client.get(ROUTING_DELTA_KEY))["base"] == first.version
        await client.set(ROUTING_KEY, b"not a table")
        follower = RedisSource(redis_url, follower.holder, "gw-x", resync=0.2)
        assert await follower.fetch_once() is True
        assert follower.holder.table.version == second.version
        assert await follower.fetch_once() is False  # nothing newer: nothing decoded
    finally:
        await follower.aclose()
        await client.aclose()
