"""The reconciler across a change of leader and with several GPU specs, on real instance
processes (the local backend) and a real Redis store.

A backend shared by the old and the new leader (one LocalBackend here, as a Kubernetes
cluster is for two replicas) keeps its instances when the leader dies: the new leader
replays them and must go on with the drain the old one began. Each GPU spec of a
deployment scales and drains on its own: a long drain of one never holds up another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fngate.backends.base import InstanceEvent
from fngate.backends.inventory import Inventory
from fngate.backends.local import LocalBackend
from fngate.control import records as R
from fngate.control.loadboard import LoadBoard
from fngate.control.reconciler import Reconciler
from fngate.control.store.redis import RedisStore
from fngate.proxy.routing.snapshot import LoadReport, VersionLoad
from tests.support.helpers import deploy, gpu_spec, wait_status
from tests.support.toys import toy_catalog
from tests.support.waiting import wait_for


def _report(board: LoadBoard, vid: str, busy: dict[str, int]) -> None:
    """A gateway's load report: `busy` requests in flight per instance."""
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=sum(busy.values()), endpoint_in_flight=busy)}))


async def _docs(store, vid: str) -> dict[str, dict]:
    return {r.value["instanceId"]: r.value for r in await store.list(R.INSTANCES, vid + "/")}


def _running(backend: LocalBackend, vid: str) -> set[str]:
    return {i["instanceId"] for i in backend.instances(vid)}


class LateReplay(LocalBackend):
    """The local backend, whose replay of what runs reaches a new subscriber `replay_delay`
    seconds late, as the events of a loaded machine may."""

    replay_delay = 0.0

    def events(self) -> AsyncIterator[InstanceEvent]:
        return self._late(super().events())

    async def _late(self, events: AsyncIterator[InstanceEvent]) -> AsyncIterator[InstanceEvent]:
        await asyncio.sleep(self.replay_delay)
        async for event in events:
            yield event


@pytest.fixture
async def world(tmp_path, redis_url):
    store = await RedisStore.open(redis_url)
    backend = LateReplay(
        "local", data_dir=tmp_path, catalog=toy_catalog(), probe_interval=0.2, inventory=Inventory({"L40S": 4, "H100": 2, "A100": 1})
    )
    board = LoadBoard()
    made: list[Reconciler] = []

    def reconciler(store: Any = store, **kw: Any) -> Reconciler:
        rec = Reconciler(store, {"local": backend}, board, resync_interval=0.3, drain_settle=0.05, **kw)
        made.append(rec)
        return rec

    yield store, backend, board, reconciler
    for rec in made:
        await rec.aclose()
    await backend.aclose()
    await store.aclose()


@pytest.mark.parametrize("replay_delay", [0.0, 1.0])
async def test_a_drain_the_old_leader_began_is_resumed_by_the_new_one(world, replay_delay):
    """A backend both leaders share (or the same replica leading again, its local instances
    still running): the new leader goes on with the drain. With the backend's replay late,
    it must not apply a count before it has seen what runs (it stopped a busy one before)."""
    store, backend, board, reconciler = world
    old = reconciler(inherit_grace=1.5)
    await old.start()
    vid = await _one_of_two_draining(store, backend, board)
    a, b = _running(backend, vid)
    victim = next(i for i, d in (await _docs(store, vid)).items() if d.get("draining"))
    keeper = b if victim == a else a

    await old.aclose()  # the leader dies mid-drain; the shared backend's instances run on
    backend.replay_delay = replay_delay
    new = reconciler(inherit_grace=1.5)
    await new.start()
    await asyncio.sleep(2.5)  # past the grace and several passes
    docs = await _docs(store, vid)
    assert _running(backend, vid) == {a, b}, "nothing may be cut while its requests run"
    assert docs[victim]["draining"] is True, "the new leader must keep the instance out of routing"
    assert not docs[keeper].get("draining"), "and must not drain the other one instead"

    _report(board, vid, {victim: 0, keeper: 1})  # the victim's request ended
    await wait_for(lambda: _only(backend, vid, keeper), what="the drained instance stopped", timeout=15)
    await wait_for(lambda: _doc_ids(store, vid, {keeper}), what="its doc removed", timeout=10)
    await asyncio.sleep(1.0)
    assert _running(backend, vid) == {keeper}, "one instance wanted: no replacement for the drained one"


class DeafToCancel:
    """The store, but once `hold` is set a read of a scale doc waits for `release` and
    finishes even when cancelled, as a read inside a client library that swallows the
    cancel does (redis-py turns some into ordinary errors, or completes them)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.hold = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    async def get(self, kind: str, key: str):
        if self.hold and kind == R.SCALE:
            self.hold = False
            self.held.set()
            done = asyncio.ensure_future(self.release.wait())
            while not done.done():
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    continue
        return await self.store.get(kind, key)


async def test_a_leader_that_stops_mid_drain_changes_nothing_on_its_backend(world):
    """A pass still running when the leader's reconciler stops (its cancel swallowed by a
    client library) must not touch the backend: the drain it ran was cancelled, so the pass
    counted the draining instance in, applied the lower count, and the backend stopped the
    busy instance the next leader was to go on draining."""
    store, backend, board, reconciler = world
    deaf = DeafToCancel(store)
    old = reconciler(inherit_grace=1.5, store=deaf)
    await old.start()
    vid = await _one_of_two_draining(store, backend, board)
    both = _running(backend, vid)

    deaf.hold = True  # the next pass's read of the scale doc outlives the stop
    await asyncio.wait_for(deaf.held.wait(), 5)
    closing = asyncio.ensure_future(old.aclose())
    await asyncio.sleep(0.3)  # the drain is cancelled meanwhile
    deaf.release.set()
    await closing
    await asyncio.sleep(1.0)
    assert _running(backend, vid) == both, "a stopping leader stopped a busy instance"


async def test_instances_no_backend_of_the_new_leader_runs_are_drained_then_let_go(world):
    """The previous leader's instances on its own local backend: the new leader keeps their
    docs draining while requests run on them, then deletes them (their replica then stops
    them, control/handover.py)."""
    store, _backend, board, reconciler = world
    spec = gpu_spec(1, 1)
    fid, vid = await deploy(store, specs=[spec])
    foreign = R.InstanceRecord(
        instance_id="elsewhere-1",
        function_id=fid,
        version_id=vid,
        gpu_spec_id=spec["gpuSpecificationId"],
        status="ACTIVE",
        host="127.0.0.1",
        port=9,
        backend="local",
        instance_type="NCP.GPU.L40S_1x",
        gpu="L40S",
        nca_id="fngate",
        draining=False,
        created_at=R.now_iso(),
        updated_at=R.now_iso(),
    )
    await store.put(R.INSTANCES, R.instance_key(vid, "elsewhere-1"), foreign.to_doc())
    _report(board, vid, {"elsewhere-1": 1})  # a request runs on it through some gateway
    rec = reconciler(inherit_grace=0.3)
    await rec.start()
    await wait_for(lambda: _count_draining(store, vid, 1), what="the foreign instance marked draining", timeout=5)
    await wait_for(lambda: _count_ready(store, vid, 2), what="the new leader's own instance ready", timeout=30)
    await asyncio.sleep(1.0)
    assert "elsewhere-1" in await _docs(store, vid), "kept while a request runs on it"
    _report(board, vid, {"elsewhere-1": 0})
    await wait_for(lambda: _absent(store, vid, "elsewhere-1"), what="its doc deleted once idle", timeout=5)


async def test_each_gpu_spec_scales_and_drains_on_its_own(world):
    store, backend, board, reconciler = world
    rec = reconciler()
    await rec.start()
    l40s = gpu_spec(1, 3)
    h100 = gpu_spec(1, 2, gpu="H100", instanceType="NCP.GPU.H100_1x")
    fid, vid = await deploy(store, specs=[l40s, h100])
    await wait_status(store, fid, vid, "ACTIVE", timeout=30)
    by_spec = await _by_spec(store, vid)
    assert {k: len(v) for k, v in by_spec.items()} == {l40s["gpuSpecificationId"]: 1, h100["gpuSpecificationId"]: 1}
    types = {d["gpuSpecificationId"]: (d["gpu"], d["instanceType"]) for d in (await _docs(store, vid)).values()}
    assert types == {l40s["gpuSpecificationId"]: ("L40S", "NCP.GPU.L40S_1x"), h100["gpuSpecificationId"]: ("H100", "NCP.GPU.H100_1x")}

    s_l40s, s_h100 = R.scale_key(vid, l40s["gpuSpecificationId"]), R.scale_key(vid, h100["gpuSpecificationId"])
    await store.put(R.SCALE, s_l40s, {"replicas": 3})
    await store.put(R.SCALE, s_h100, {"replicas": 2})
    await wait_for(lambda: _count_ready(store, vid, 5), what="3 L40S + 2 H100 instances ready", timeout=40)
    by_spec = await _by_spec(store, vid)
    assert len(by_spec[l40s["gpuSpecificationId"]]) == 3 and len(by_spec[h100["gpuSpecificationId"]]) == 2

    # every L40S instance busy: its scale-down drains; the idle H100 one goes at once meanwhile
    _report(board, vid, dict.fromkeys(by_spec[l40s["gpuSpecificationId"]], 1))
    await store.put(R.SCALE, s_l40s, {"replicas": 1})
    await wait_for(lambda: _count_draining(store, vid, 2), what="two L40S instances draining")
    await store.put(R.SCALE, s_h100, {"replicas": 1})
    await wait_for(
        lambda: _spec_count(store, vid, h100["gpuSpecificationId"], 1), what="H100 scaled down during the L40S drain", timeout=10
    )
    assert len(_running(backend, vid)) == 4, "the draining L40S instances still run"

    _report(board, vid, dict.fromkeys(by_spec[l40s["gpuSpecificationId"]], 0))
    await wait_for(lambda: _spec_count(store, vid, l40s["gpuSpecificationId"], 1), what="L40S drained down to one", timeout=15)
    await asyncio.sleep(1.0)
    by_spec = await _by_spec(store, vid)
    assert {k: len(v) for k, v in by_spec.items()} == {l40s["gpuSpecificationId"]: 1, h100["gpuSpecificationId"]: 1}
    assert len(_running(backend, vid)) == 2


async def _one_of_two_draining(store, backend: LocalBackend, board: LoadBoard) -> str:
    """A version deployed with two instances, both busy, scaled down to one: the leader
    drains one of them. Its version id."""
    spec = gpu_spec(1, 2)
    fid, vid = await deploy(store, specs=[spec])
    scale = R.scale_key(vid, spec["gpuSpecificationId"])
    await store.put(R.SCALE, scale, {"replicas": 2})
    await wait_for(lambda: _count_ready(store, vid, 2), what="two instances ready", timeout=30)
    await wait_status(store, fid, vid, "ACTIVE")
    _report(board, vid, dict.fromkeys(_running(backend, vid), 1))  # both busy: the scale-down has to wait
    await store.put(R.SCALE, scale, {"replicas": 1})
    await wait_for(lambda: _count_draining(store, vid, 1), what="the leader draining one instance")
    return vid


# -- predicates ---------------------------------------------------------------------------
async def _count_ready(store, vid: str, n: int) -> bool:
    return sum(d["instanceStatus"] == "ACTIVE" for d in (await _docs(store, vid)).values()) == n


async def _count_draining(store, vid: str, n: int) -> bool:
    return sum(bool(d.get("draining")) for d in (await _docs(store, vid)).values()) == n


async def _only(backend: LocalBackend, vid: str, iid: str) -> bool:
    return _running(backend, vid) == {iid}


async def _doc_ids(store, vid: str, ids: set[str]) -> bool:
    return set(await _docs(store, vid)) == ids


async def _absent(store, vid: str, iid: str) -> bool:
    return iid not in await _docs(store, vid)


async def _by_spec(store, vid: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for iid, d in (await _docs(store, vid)).items():
        out.setdefault(d["gpuSpecificationId"], []).append(iid)
    return out


async def _spec_count(store, vid: str, spec_id: str, n: int) -> bool:
    return len((await _by_spec(store, vid)).get(spec_id, [])) == n
