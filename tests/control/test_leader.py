"""Leader lease among replicas on one store: one leader at a time, a new one after the
old one's lease expires, and a stale leader's writes refused by the fence."""

from __future__ import annotations

import pytest

from fngate.control.leader import LEASE_KEY, LEASE_KIND, FencedStore, Leadership, NotLeader
from fngate.control.store.base import Conflict, Put
from fngate.control.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Replica:
    def __init__(self, store: MemoryStore, name: str, clock: Clock) -> None:
        self.events: list[str] = []
        self.lead = Leadership(store, name, self.elected, self.deposed, ttl=10, renew_every=3, clock=clock)
        self.store = FencedStore(store, self.lead)

    async def elected(self, token: int) -> None:
        self.events.append(f"elected {token}")

    async def deposed(self) -> None:
        self.events.append("deposed")


@pytest.fixture
def world():
    store, clock = MemoryStore(), Clock()
    return store, clock, Replica(store, "a", clock), Replica(store, "b", clock)


async def test_one_leader_and_renewals_keep_it(world):
    store, clock, a, b = world
    await a.lead.step()
    await b.lead.step()
    assert a.events == ["elected 1"] and b.events == []
    for _ in range(5):  # renewed inside its ttl: nobody else gets it
        clock.now += 3
        await a.lead.step()
        await b.lead.step()
    assert a.lead.leading and not b.lead.leading and b.events == []
    lease = await store.get(LEASE_KIND, LEASE_KEY)
    assert lease is not None and lease.value["holder"] == "a" and lease.value["expires"] == clock.now + 10


async def test_a_new_leader_after_expiry_and_the_stale_one_is_fenced_off(world):
    store, clock, a, b = world
    await a.lead.step()
    await a.store.put("deployments", "f/v", {"by": "a"})  # the leader writes through its fence
    clock.now += 10.5  # a is paused past its lease
    await b.lead.step()
    assert b.events == ["elected 2"]
    # the stale leader wakes up and writes: refused as a whole, nothing changes
    before = await store.revision()
    with pytest.raises(NotLeader):
        await a.store.commit([Put("deployments", "f/v", {"by": "a, stale"}), Put("instances", "i1", {})])
    assert await store.revision() == before
    assert (await store.get("deployments", "f/v")).value == {"by": "a"}
    assert await store.get("instances", "i1") is None
    assert isinstance(NotLeader(1, 2), Conflict)  # the loops treat it as a lost race
    await a.lead.step()  # and it learns it no longer leads
    assert a.events == ["elected 1", "deposed"] and not a.lead.leading
    await b.store.put("deployments", "f/v", {"by": "b"})
    assert (await store.get("deployments", "f/v")).value == {"by": "b"}


async def test_a_follower_cannot_write_through_the_fence(world):
    _, _, a, b = world
    await a.lead.step()
    await b.lead.step()
    with pytest.raises(NotLeader):
        await b.store.put("deployments", "f/v", {})


async def test_fenced_writes_do_not_disturb_renewal(world):
    _, clock, a, b = world
    await a.lead.step()
    for i in range(3):
        await a.store.put("deployments", f"f/v{i}", {})
        clock.now += 3
        await a.lead.step()
    await b.lead.step()
    assert a.lead.leading and a.events == ["elected 1"] and b.events == []


async def test_stopping_hands_the_lease_over_at_once(world):
    _, _, a, b = world
    await a.lead.step()
    await a.lead.aclose()
    assert a.events == ["elected 1", "deposed"]
    await b.lead.step()  # no need to wait for the expiry
    assert b.events == ["elected 2"]


def test_renewal_must_come_before_expiry():
    with pytest.raises(ValueError):
        Leadership(MemoryStore(), "x", Replica.elected, Replica.deposed, ttl=3, renew_every=3)  # type: ignore[arg-type]
