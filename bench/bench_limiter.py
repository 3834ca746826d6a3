"""The limiter and balancer: a slot taken and given back, with 1 and 16 instances."""

from __future__ import annotations

import pytest

from fngate.bench.fngate import Upstream, build_table, function_id
from fngate.proxy.config import LOOPBACK
from fngate.proxy.routing.limiter import Limiter
from fngate.proxy.routing.snapshot import Endpoint, SnapshotHolder


def _route(instances: int):
    table = build_table([Upstream("fn", LOOPBACK, 9000)], max_concurrency=64)
    route = next(iter(table.functions[function_id("fn")].values()))
    endpoints = tuple(Endpoint(f"fn-{i}", LOOPBACK, 9000 + i) for i in range(instances))
    return table, route.__class__(**{**{n: getattr(route, n) for n in route.__slots__}, "endpoints": endpoints})


@pytest.mark.parametrize("instances", (1, 16))
def test_acquire_release(benchmark, instances):
    """One request's admission: pick the less loaded of two instances, take and free a slot."""
    table, route = _route(instances)
    limiter = Limiter(SnapshotHolder(table))

    def admit_and_release():
        lease = limiter.try_acquire(route)
        lease.release()  # type: ignore[union-attr]  # a slot is free
        return lease

    assert benchmark(admit_and_release).endpoint in route.endpoints
    assert sum(limiter.in_flight.values()) == 0


def test_balance_under_load(benchmark):
    """Picking among 16 instances while 32 requests are in flight."""
    table, route = _route(16)
    limiter = Limiter(SnapshotHolder(table))
    held = [limiter.try_acquire(route) for _ in range(32)]

    def admit_and_release():
        lease = limiter.try_acquire(route)
        lease.release()  # type: ignore[union-attr]  # a slot is free
        return lease

    benchmark(admit_and_release)
    assert sum(limiter.in_flight.values()) == len(held)
    for lease in held:
        lease.release()  # type: ignore[union-attr]  # a slot is free
