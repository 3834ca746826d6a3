"""The routing snapshot: build, wire round-trip, holder semantics, key grants."""

import asyncio
import dataclasses

import orjson
import pytest

from fngate.proxy.routing.snapshot import (
    EMPTY_TABLE,
    Endpoint,
    KeyGrant,
    LoadReport,
    RoutingTable,
    SnapshotHolder,
    VersionLoad,
    VersionRoute,
    key_digest,
)


def _table(version=1):
    routes = [
        VersionRoute("f1", "v1", "echo", "ACTIVE", endpoints=(Endpoint("i1", "127.0.0.1", 9001),), max_concurrency=4),
        VersionRoute("f1", "v2", "echo", "DEGRADED"),
        VersionRoute("f2", "v3", "grpc", "DEGRADING", grpc=True, endpoints=(Endpoint("i2", "127.0.0.1", 9002),)),
    ]
    keys = [(key_digest("nvapi-abc"), KeyGrant("k1", frozenset({"invoke_function"}), frozenset({"f1"}), None))]
    return RoutingTable.build(version, routes, keys)


def test_invokable_versions_are_active_or_degrading():
    t = _table()
    assert [r.version_id for r in t.invokable["f1"]] == ["v1"]
    assert [r.version_id for r in t.invokable["f2"]] == ["v3"]
    assert set(t.functions["f1"]) == {"v1", "v2"}


def test_json_round_trip_is_lossless():
    t = _table(7)
    back = RoutingTable.from_json(t.to_json())
    assert back == t


def test_every_field_survives_the_wire():
    route = VersionRoute(
        "f9",
        "v9",
        "llm",
        "DEGRADING",
        nca_id="org",
        inference_url="/v1",
        inference_port=9100,
        grpc=True,
        max_concurrency=8,
        queue_limit=7,
        instance_type="g5",
        gpu="L40S",
        backend="k8s",
        region="eu",
        env="prod",
        endpoints=(Endpoint("i1", "10.0.0.1", 9100, draining=True), Endpoint("i2", "10.0.0.2", 9101)),
        authorized=frozenset({"nca-b"}),
        rate_limit='{"rateLimit":"1-S"}',
        function_type="LLM",
        llm_models='[{"llmConfig":{"uris":["/v1/chat/completions"]},"name":"meta/llama-3"}]',
    )
    grant = KeyGrant("k9", frozenset({"a", "b"}), frozenset({"f9"}), 123.0, "org", "bob")
    t = RoutingTable.build(3, [route], [("d9", grant)])
    wire = orjson.loads(t.to_json())
    assert list(wire["routes"][0]) == [f.name for f in dataclasses.fields(VersionRoute)]
    back = RoutingTable.from_json(t.to_json())
    assert back == t and back.invokable == {"f9": (route,)}
    decoded = back.functions["f9"]["v9"]
    assert type(decoded) is VersionRoute and type(decoded.endpoints[0]) is Endpoint
    assert type(back.keys["d9"]) is KeyGrant
    assert hash(decoded) == hash(route)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.status = "ACTIVE"  # type: ignore[misc]  # the frozen assignment is the point


def test_a_snapshot_without_defaulted_fields_decodes_with_the_defaults():
    doc = {
        "version": 2,
        "keys": [],
        "routes": [{"function_id": "f1", "version_id": "v1", "name": "echo", "status": "ACTIVE", "endpoints": [["i1", "127.0.0.1", 9001]]}],
    }
    route = RoutingTable.from_json(orjson.dumps(doc)).invokable["f1"][0]
    assert route == VersionRoute("f1", "v1", "echo", "ACTIVE", endpoints=(Endpoint("i1", "127.0.0.1", 9001),))


def test_llm_fields_are_on_the_wire_only_when_set():
    """A route of a DEFAULT function has exactly the wire form of the tables before LLM fields
    existed, so a gateway of that build still reads it; a table from such a build (no LLM
    fields anywhere) decodes with the defaults."""
    plain = VersionRoute("f1", "v1", "echo", "ACTIVE")
    llm = VersionRoute("f2", "v2", "llm", "ACTIVE", function_type="LLM", llm_models='[{"llmConfig":{"uris":[]},"name":"m"}]')
    wire = orjson.loads(RoutingTable.build(1, [plain, llm], []).to_json())
    by_fid = {r["function_id"]: r for r in wire["routes"]}
    assert "function_type" not in by_fid["f1"] and "llm_models" not in by_fid["f1"]
    assert (by_fid["f2"]["function_type"], by_fid["f2"]["llm_models"]) == ("LLM", llm.llm_models)
    back = RoutingTable.from_json(orjson.dumps(wire))
    assert back.functions["f1"]["v1"] == plain and back.functions["f2"]["v2"] == llm


def test_a_route_with_only_some_optional_fields_decodes_too():
    doc = orjson.loads(_table().to_json())
    doc["routes"][0]["function_type"] = "STREAMING"  # no llm_models: the slower keyword path takes it
    route = RoutingTable.from_json(orjson.dumps(doc)).functions["f1"]["v1"]
    assert route.function_type == "STREAMING" and route.llm_models == ""


def test_a_route_with_an_unknown_field_is_refused():
    doc = orjson.loads(_table().to_json())
    doc["routes"][0]["colour"] = "blue"
    with pytest.raises(TypeError):
        RoutingTable.from_json(orjson.dumps(doc))


def test_a_later_route_for_the_same_version_replaces_the_earlier():
    first = VersionRoute("f1", "v1", "echo", "ACTIVE")
    t = RoutingTable.build(1, [first, VersionRoute("f1", "v1", "echo", "DEGRADED")], [])
    assert t.functions["f1"]["v1"].status == "DEGRADED" and t.invokable["f1"] == ()


def test_key_grant_scopes_functions_and_expiry():
    g = KeyGrant("k", frozenset({"invoke_function"}), frozenset({"f1"}), expires_at=100.0)
    assert g.allows("invoke_function", "f1", now=50)
    assert not g.allows("invoke_function", "f2", now=50)
    assert not g.allows("deploy_function", "f1", now=50)
    assert not g.allows("invoke_function", "f1", now=100)
    assert KeyGrant("k", frozenset({"x"})).allows("x", "anything", now=0)


async def test_holder_ignores_older_tables_and_wakes_waiters():
    holder = SnapshotHolder()
    assert holder.table is EMPTY_TABLE
    waiter = asyncio.create_task(holder.wait_newer_than(0, timeout=5))
    await asyncio.sleep(0)
    assert holder.publish(_table(2))
    assert (await waiter).version == 2
    assert not holder.publish(_table(1))
    assert holder.table.version == 2
    t = await holder.wait_newer_than(2, timeout=0.01)
    assert t.version == 2


def test_load_report_round_trip():
    r = LoadReport("gw-1", 12.5, {"v1": VersionLoad(queue_depth=3, in_flight=2, busy_seconds=1.5, queued_ids=["a", "b"])})
    assert LoadReport.from_json(r.to_json()) == r
