"""Routing lookup over 10 / 1k / 100k functions: per-request resolve + key check (HTTP and
gRPC paths), the bare snapshot read, and a table's JSON round trip.

The per-call work must not grow with the number of functions (dict lookups only).
Encoding a table is the control plane's cost per publish; decoding it is every gateway
worker's, and it blocks that worker's event loop meanwhile.
"""

from __future__ import annotations

import dataclasses

import pytest

from fngate.bench.fngate import BENCH_KEY, Upstream, build_table, function_id
from fngate.proxy.config import LOOPBACK
from fngate.proxy.grpc.route import route_call
from fngate.proxy.routing.lookup import KeyChecker, resolve, target_from_host
from fngate.proxy.routing.snapshot import RoutingTable, key_digest

SIZES = (10, 1_000, 100_000)
_tables: dict[int, RoutingTable] = {}


def table(n: int) -> RoutingTable:
    if n not in _tables:
        _tables[n] = build_table([Upstream(f"fn{i}", LOOPBACK, 9000 + i % 1000, "h2c") for i in range(n)])
    return _tables[n]


@pytest.mark.parametrize("n", SIZES)
def test_resolve_and_authorize(benchmark, n):
    """What one gRPC call costs in routing: function-id lookup, key digest, grant check."""
    t = table(n)
    metadata = {"function-id": function_id(f"fn{n // 2}"), "authorization": f"Bearer {BENCH_KEY}"}
    route = benchmark(route_call, t, metadata, KeyChecker())
    assert route.function_id == metadata["function-id"]


@pytest.mark.parametrize("n", SIZES)
def test_http_host_route_and_key(benchmark, n):
    """What one HTTP request costs in routing: Host labels -> version, bearer -> grant."""
    t = table(n)
    fid = function_id(f"fn{n // 2}")
    host = f"{fid}.invocation.localhost:8000"
    auth = f"Bearer {BENCH_KEY}".encode()
    checker = KeyChecker()

    def lookup():
        function, version = target_from_host(host)  # type: ignore[misc]  # the host names a function
        route = resolve(t, function, version)
        checker.check(t, auth, function)
        return route

    assert benchmark(lookup).function_id == fid


@pytest.mark.parametrize("n", SIZES)
def test_invokable_lookup(benchmark, n):
    """The bare snapshot read: function id -> invokable versions."""
    t = table(n)
    fid = function_id(f"fn{n // 2}")
    routes = benchmark(t.invokable.get, fid)
    assert routes and routes[0].function_id == fid


def test_key_digest(benchmark):
    assert benchmark(key_digest, BENCH_KEY) == key_digest(BENCH_KEY)


@pytest.mark.parametrize("n", SIZES)
def test_table_json_round_trip(benchmark, n):
    """What a gateway pays per published snapshot (decode + index), on its event loop."""
    data = table(n).to_json()
    t = benchmark(RoutingTable.from_json, data)
    assert t == table(n)


@pytest.mark.parametrize("n", SIZES)
def test_table_to_json(benchmark, n):
    """What the control plane pays to publish a snapshot."""
    data = benchmark(table(n).to_json)
    assert RoutingTable.from_json(data) == table(n)


def _one_function_changed(n: int) -> RoutingTable:
    """table(n) one publish later: one function's instance moved to another port."""
    t = table(n)
    fid = function_id(f"fn{n // 2}")
    routes = [r for versions in t.functions.values() for r in versions.values()]
    moved = [
        dataclasses.replace(r, endpoints=(dataclasses.replace(r.endpoints[0], port=r.endpoints[0].port + 1),))
        if r.function_id == fid
        else r
        for r in routes
    ]
    return RoutingTable.build(t.version + 1, moved, list(t.keys.items()))


@pytest.mark.parametrize("n", SIZES)
def test_publish_to_serve_by_delta(benchmark, n):
    """Publish-to-serve for a one-function change, by delta: what a gateway's event loop
    pays to apply it (the whole-table figure is test_table_json_round_trip)."""
    old, new = table(n), _one_function_changed(n)
    delta = old.delta_json(new)
    served = benchmark(old.apply_json, delta)
    assert served is not None and served.version == new.version and served.functions == new.functions


@pytest.mark.parametrize("n", SIZES)
def test_delta_encode(benchmark, n):
    """What the control plane pays to compute a one-function delta (once per publish)."""
    old, new = table(n), _one_function_changed(n)
    assert b'"base"' in benchmark(old.delta_json, new)
