"""The reconciler against the scripted fake backend and the local one: states follow
instance facts, failures become ERROR with healthInfo, undeploy cleans up."""

from __future__ import annotations

import asyncio
import time

import pytest

from fngate.backends.fake import FakeBackend
from fngate.backends.inventory import Inventory
from fngate.backends.local import LocalBackend
from fngate.control import records as R
from fngate.control.loadboard import LoadBoard
from fngate.control.reconciler import Reconciler
from fngate.control.store.base import Delete, Put
from fngate.control.store.memory import MemoryStore
from fngate.proxy.routing.snapshot import LoadReport, VersionLoad
from tests.support.helpers import deploy, gpu_spec, status_of, wait_status
from tests.support.toys import toy_catalog
from tests.support.waiting import wait_for


@pytest.fixture
async def fake_world():
    store = MemoryStore()
    backend = FakeBackend("fake", auto_ready=False, inventory=Inventory({"L40S": 3, "H100": 1, "A100": 1}))
    board = LoadBoard()
    rec = Reconciler(store, {"fake": backend}, board, resync_interval=0.2, drain_settle=0.05, drain_timeout=2)
    await rec.start()
    yield store, backend, rec, board
    await rec.aclose()
    await backend.aclose()


async def instances(store, vid):
    return [r.value for r in await store.list(R.INSTANCES, vid + "/")]


async def test_deploying_until_min_ready_then_degrading_degraded_and_back(fake_world):
    store, fake, _, _ = fake_world
    fid, vid = await deploy(store, specs=[gpu_spec(2, 3)])
    await wait_for(lambda: _n(fake, vid, 2), what="two instances placed")
    first, second = fake.instance_ids(vid)
    fake.make_ready(first)
    await wait_for(lambda: _docs(store, vid, ready=1))
    assert await status_of(store, fid, vid) == "DEPLOYING"
    fake.make_ready(second)
    await wait_status(store, fid, vid, "ACTIVE")
    docs = await instances(store, vid)
    assert {d["instanceStatus"] for d in docs} == {"ACTIVE"} and all(d["functionId"] == fid and d["port"] for d in docs)
    fake.lose(first)
    await wait_status(store, fid, vid, "DEGRADING")
    fake.lose(second)
    await wait_status(store, fid, vid, "DEGRADED")
    fake.make_ready(first)
    await wait_status(store, fid, vid, "DEGRADING")
    fake.make_ready(second)
    await wait_status(store, fid, vid, "ACTIVE")


async def test_failed_instance_while_deploying_is_error_with_health_info(fake_world):
    store, fake, _, _ = fake_world
    fid, vid = await deploy(store)
    await wait_for(lambda: _n(fake, vid, 1))
    fake.fail(fake.instance_ids(vid)[0], "instance did not become healthy within 60s")
    await wait_status(store, fid, vid, "ERROR")
    dep = (await store.get(R.DEPLOYMENTS, R.version_key(fid, vid))).value
    [info] = dep["healthInfo"]
    assert info["error"] == "instance did not become healthy within 60s"
    assert info["gpu"] == "L40S" and info["instanceType"] == "NCP.GPU.L40S_1x" and info["backend"] == "fake"
    await wait_for(lambda: _n(fake, vid, 0), what="errored version torn down")


async def test_inventory_exhausted_is_error_and_other_functions_keep_running(fake_world):
    store, fake, _, _ = fake_world
    fid1, vid1 = await deploy(store, specs=[gpu_spec(2, 2)])
    await wait_for(lambda: _n(fake, vid1, 2))
    for i in fake.instance_ids(vid1):
        fake.make_ready(i)
    await wait_status(store, fid1, vid1, "ACTIVE")
    fid2, vid2 = await deploy(store, specs=[gpu_spec(2, 2)])
    await wait_status(store, fid2, vid2, "ERROR")
    dep = (await store.get(R.DEPLOYMENTS, R.version_key(fid2, vid2))).value
    assert "insufficient capacity: NCP.GPU.L40S_1x needs 1 L40S GPU(s), 0 of 3 free" in dep["healthInfo"][0]["error"]
    await wait_for(lambda: _n(fake, vid2, 0), what="partial placement released")
    assert await status_of(store, fid1, vid1) == "ACTIVE" and len(fake.instance_ids(vid1, ready=True)) == 2
    free = next(c["free"] for c in fake.capacity() if c["name"] == "NCP.GPU.L40S_1x")
    assert free == 1


async def test_unknown_backend_is_error(fake_world):
    store, _, _, _ = fake_world
    fid, vid = await deploy(store, specs=[gpu_spec(1, 1, backend="mars")])
    await wait_status(store, fid, vid, "ERROR")
    dep = (await store.get(R.DEPLOYMENTS, R.version_key(fid, vid))).value
    assert "no backend named 'mars'" in dep["healthInfo"][0]["error"]


async def test_scale_decision_is_clamped_and_applied(fake_world):
    store, fake, _, _ = fake_world
    spec = gpu_spec(1, 2)
    _fid, vid = await deploy(store, specs=[spec])
    await wait_for(lambda: _n(fake, vid, 1))
    await store.put(R.SCALE, R.scale_key(vid, spec["gpuSpecificationId"]), {"replicas": 5, "reason": "test"})
    await wait_for(lambda: _n(fake, vid, 2), what="clamped to maxInstances")
    await store.put(R.SCALE, R.scale_key(vid, spec["gpuSpecificationId"]), {"replicas": 0, "reason": "test"})
    await wait_for(lambda: _n(fake, vid, 1), what="clamped to minInstances")


async def test_scale_down_drains_a_ready_instance_before_stopping_it(fake_world):
    store, fake, _, board = fake_world
    spec = gpu_spec(1, 2)
    fid, vid = await deploy(store, specs=[spec])
    key = R.scale_key(vid, spec["gpuSpecificationId"])
    await store.put(R.SCALE, key, {"replicas": 2})
    await wait_for(lambda: _n(fake, vid, 2))
    for i in fake.instance_ids(vid):
        fake.make_ready(i)
    await wait_status(store, fid, vid, "ACTIVE")
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=1)}))
    await store.put(R.SCALE, key, {"replicas": 1})
    await wait_for(lambda: _docs(store, vid, draining=1), what="victim marked draining")
    assert len(fake.instance_ids(vid)) == 2, "a draining instance with work in flight must not be stopped"
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=0)}))
    await wait_for(lambda: _n(fake, vid, 1), what="victim stopped once idle")
    assert await status_of(store, fid, vid) == "ACTIVE"


async def test_undeploy_non_graceful_and_graceful(fake_world):
    store, fake, _, board = fake_world
    fake.auto_ready = True
    fid, vid = await deploy(store)
    await wait_status(store, fid, vid, "ACTIVE")
    key = R.version_key(fid, vid)
    fn = (await store.get(R.FUNCTIONS, key)).value
    await store.commit([Put(R.FUNCTIONS, key, {**fn, "status": "INACTIVE"}), Delete(R.DEPLOYMENTS, key)])
    await wait_for(lambda: _n(fake, vid, 0), what="instances removed")
    await wait_for(lambda: _docs(store, vid, total=0))

    fid, vid = await deploy(store)
    await wait_status(store, fid, vid, "ACTIVE")
    key = R.version_key(fid, vid)
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=1)}))
    fn = (await store.get(R.FUNCTIONS, key)).value
    dep = (await store.get(R.DEPLOYMENTS, key)).value
    await store.put(R.DEPLOYMENTS, key, {**dep, "graceful": True})
    await store.put(R.FUNCTIONS, key, {**fn, "status": "INACTIVE"})
    await wait_for(lambda: _docs(store, vid, draining=1), what="endpoints draining")
    assert len(fake.instance_ids(vid)) == 1
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=0)}))
    await wait_for(lambda: _n(fake, vid, 0), what="removed after in-flight finished")
    await wait_for(lambda: _gone(store, key), what="deployment doc deleted")


async def test_restart_restores_deployments(tmp_path):
    store = MemoryStore()
    mk = lambda: LocalBackend("local", data_dir=tmp_path, catalog=toy_catalog(), probe_interval=0.2)  # noqa: E731
    backend = mk()
    rec = Reconciler(store, {"local": backend}, resync_interval=0.3)
    await rec.start()
    fid, vid = await deploy(store)
    await wait_status(store, fid, vid, "ACTIVE")
    await rec.aclose()
    await backend.aclose()
    backend = mk()
    rec = Reconciler(store, {"local": backend}, resync_interval=0.3)
    await rec.start()
    try:
        await wait_for(lambda: _docs(store, vid, ready=1), what="instance running again after restart")
        assert await status_of(store, fid, vid) == "ACTIVE"
    finally:
        await rec.aclose()
        await backend.aclose()


def _n(fake, vid, n):
    async def check():
        return len(fake.instance_ids(vid)) == n

    return check()


def _docs(store, vid, *, ready=None, draining=None, total=None):
    async def check():
        docs = await instances(store, vid)
        return (
            (ready is None or sum(d["instanceStatus"] == "ACTIVE" for d in docs) == ready)
            and (draining is None or sum(bool(d.get("draining")) for d in docs) == draining)
            and (total is None or len(docs) == total)
        )

    return check()


def _gone(store, key):
    async def check():
        return await store.get(R.DEPLOYMENTS, key) is None

    return check()


async def test_scale_down_uses_per_endpoint_counts_when_gateways_report_them(fake_world):
    store, fake, _, board = fake_world
    spec = gpu_spec(1, 2)
    fid, vid = await deploy(store, specs=[spec])
    key = R.scale_key(vid, spec["gpuSpecificationId"])
    await store.put(R.SCALE, key, {"replicas": 2})
    await wait_for(lambda: _n(fake, vid, 2))
    for i in fake.instance_ids(vid):
        fake.make_ready(i)
    await wait_status(store, fid, vid, "ACTIVE")
    a, b = fake.instance_ids(vid)
    busy = {a: 1, b: 1}
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=2, endpoint_in_flight=busy)}))
    await store.put(R.SCALE, key, {"replicas": 1})
    await wait_for(lambda: _docs(store, vid, draining=1), what="victim marked draining")
    [victim] = [r.value["instanceId"] for r in await store.list(R.INSTANCES, vid + "/") if r.value.get("draining")]
    survivor = b if victim == a else a
    assert victim == b, "the newest ready instance is the one drained"
    await asyncio.sleep(0.3)
    assert len(fake.instance_ids(vid)) == 2
    # the survivor stays busy; the victim goes idle: that is enough to stop it
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=1, endpoint_in_flight={survivor: 1, victim: 0})}))
    await wait_for(lambda: _n(fake, vid, 1), what="idle victim stopped while the version is still busy")
    assert fake.instance_ids(vid) == [survivor]


async def test_local_instance_that_exits_at_once_puts_the_function_in_error(tmp_path):
    store = MemoryStore()
    backend = LocalBackend("local", data_dir=tmp_path, catalog=toy_catalog(), probe_interval=0.2)
    rec = Reconciler(store, {"local": backend}, resync_interval=0.3)
    await rec.start()
    try:
        fid, vid = await deploy(store, image="test/exits")
        await wait_status(store, fid, vid, "ERROR")
        [info] = (await store.get(R.DEPLOYMENTS, R.version_key(fid, vid))).value["healthInfo"]
        assert "exited with code 3 during startup: cannot load model weights" in info["error"]
        assert info["backend"] == "local" and info["instanceType"] == "NCP.GPU.L40S_1x"
        await wait_for(lambda: _none_left(backend, store, vid), what="nothing left running")
    finally:
        await rec.aclose()
        await backend.aclose()


def _none_left(backend, store, vid):
    async def check():
        return backend.instances(vid) == [] and await store.list(R.INSTANCES, vid + "/") == []

    return check()


async def test_errored_deployment_is_cleaned_up_after_its_ttl():
    store = MemoryStore()
    backend = FakeBackend("fake", bad_images=frozenset({"test/bad"}))
    rec = Reconciler(store, {"fake": backend}, resync_interval=0.2, error_ttl=0.5)
    await rec.start()
    try:
        fid, vid = await deploy(store, image="test/bad")
        await wait_status(store, fid, vid, "ERROR")
        assert (await store.get(R.DEPLOYMENTS, R.version_key(fid, vid))).value["healthInfo"]
        await wait_status(store, fid, vid, "INACTIVE", timeout=5)
        assert await store.get(R.DEPLOYMENTS, R.version_key(fid, vid)) is None
    finally:
        await rec.aclose()
        await backend.aclose()


class HangingBackend(FakeBackend):
    """A fake whose `apply` never returns for the images in `hang_images` (a backend
    call stuck on an unreachable API, say), and answers at once for the rest."""

    def __init__(self, *args, hang_images: frozenset[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hang_images = hang_images
        self.hanging: set[str] = set()  # version ids whose apply is stuck

    async def apply(self, spec, replicas):
        if spec.container_image in self.hang_images:
            self.hanging.add(spec.version_id)
            await asyncio.Event().wait()
        await super().apply(spec, replicas)


async def test_a_hung_apply_for_one_version_does_not_delay_another():
    store = MemoryStore()
    backend = HangingBackend("fake", hang_images=frozenset({"test/hangs"}), bad_images=frozenset({"test/bad"}))
    rec = Reconciler(store, {"fake": backend}, resync_interval=0.2, slow_pass=0.2)
    await rec.start()
    try:
        stuck_fid, stuck_vid = await deploy(store, image="test/hangs")
        await wait_for(lambda: stuck_vid in backend.hanging, what="the first version's apply to hang")
        started = time.monotonic()
        fid, vid = await deploy(store)
        bad_fid, bad_vid = await deploy(store, image="test/bad")
        await wait_status(store, fid, vid, "ACTIVE", timeout=5)
        await wait_status(store, bad_fid, bad_vid, "ERROR", timeout=5)
        assert time.monotonic() - started < 3, "the other versions waited for the hung one"
        assert await status_of(store, stuck_fid, stuck_vid) == "DEPLOYING"
        # resyncs keep marking the stuck version; its passes never pile up or overlap
        await asyncio.sleep(0.6)
        assert [c for c in backend.calls if c[1] == stuck_vid] == [], "a second pass started while the first hangs"
    finally:
        await rec.aclose()
        await backend.aclose()


async def test_many_versions_deploy_side_by_side_while_several_hang():
    store = MemoryStore()
    backend = HangingBackend("fake", hang_images=frozenset({"test/hangs"}), inventory=Inventory({"L40S": 64, "H100": 1, "A100": 1}))
    rec = Reconciler(store, {"fake": backend}, resync_interval=0.2, workers=2, slow_pass=0.1)
    await rec.start()
    try:
        stuck = [await deploy(store, image="test/hangs") for _ in range(4)]  # more than there are workers
        await wait_for(lambda: len(backend.hanging) == 4, what="four hung applies")
        fine = [await deploy(store) for _ in range(10)]
        for fid, vid in fine:
            await wait_status(store, fid, vid, "ACTIVE", timeout=5)
        for fid, vid in stuck:
            assert await status_of(store, fid, vid) == "DEPLOYING"
    finally:
        await rec.aclose()
        await backend.aclose()


async def _two_ready(store, fake, spec):
    fid, vid = await deploy(store, specs=[spec])
    key = R.scale_key(vid, spec["gpuSpecificationId"])
    await store.put(R.SCALE, key, {"replicas": 2})
    await wait_for(lambda: _n(fake, vid, 2))
    for i in fake.instance_ids(vid):
        fake.make_ready(i)
    await wait_status(store, fid, vid, "ACTIVE")
    return fid, vid, key


def _report(board, vid, busy):
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=sum(busy.values()), endpoint_in_flight=busy)}))


async def test_scale_down_stops_an_idle_instance_rather_than_drain_a_busy_one(fake_world):
    store, fake, _, board = fake_world
    _fid, vid, key = await _two_ready(store, fake, gpu_spec(1, 2))
    older, newest = fake.instance_ids(vid)
    _report(board, vid, {older: 0, newest: 1})  # a long stream runs on the newest
    await store.put(R.SCALE, key, {"replicas": 1})
    await wait_for(lambda: _n(fake, vid, 1), what="one instance stopped", timeout=3)
    assert fake.instance_ids(vid) == [newest], "the busy instance was chosen while an idle one could go"


async def test_the_version_scales_up_while_a_scale_down_drains():
    store = MemoryStore()
    fake = FakeBackend("fake", auto_ready=False, inventory=Inventory({"L40S": 8, "H100": 1, "A100": 1}))
    board = LoadBoard()
    rec = Reconciler(store, {"fake": fake}, board, resync_interval=0.2, drain_settle=0.05)
    await rec.start()
    try:
        _fid, vid, key = await _two_ready(store, fake, gpu_spec(1, 4))
        a, b = fake.instance_ids(vid)
        _report(board, vid, {a: 1, b: 1})  # both busy: the drain has to wait
        await store.put(R.SCALE, key, {"replicas": 1})
        await wait_for(lambda: _docs(store, vid, draining=1), what="victim draining")
        [victim] = [r.value["instanceId"] for r in await store.list(R.INSTANCES, vid + "/") if r.value.get("draining")]
        await store.put(R.SCALE, key, {"replicas": 3})  # load came back while the victim drains
        await wait_for(lambda: _n(fake, vid, 4), what="two more instances placed during the drain", timeout=3)
        assert victim in fake.instance_ids(vid), "the draining instance must stay until it is idle"
        _report(board, vid, {a: 1 if victim != a else 0, b: 1 if victim != b else 0})
        await wait_for(lambda: _n(fake, vid, 3), what="victim stopped once idle")
        assert victim not in fake.instance_ids(vid)
        await asyncio.sleep(0.5)
        assert len(fake.instance_ids(vid)) == 3, "the target after the drain is the newest one (3)"
    finally:
        await rec.aclose()
        await fake.aclose()


async def test_a_drain_that_hits_its_deadline_is_logged_and_counted(fake_world, caplog):
    store, fake, rec, board = fake_world  # drain_timeout=2
    _fid, vid, key = await _two_ready(store, fake, gpu_spec(1, 2))
    a, b = fake.instance_ids(vid)
    _report(board, vid, {a: 1, b: 1})  # never idle
    await store.put(R.SCALE, key, {"replicas": 1})
    await wait_for(lambda: _docs(store, vid, draining=1), what="victim draining")
    await asyncio.sleep(1.0)
    assert len(fake.instance_ids(vid)) == 2 and rec.drain_timeouts == 0
    await wait_for(lambda: _n(fake, vid, 1), what="victim stopped at the deadline", timeout=5)
    assert rec.drain_timeouts == 1
    assert any("drain timed out after 2s" in r.getMessage() and "1 request(s) in flight" in r.getMessage() for r in caplog.records)


def test_the_drain_deadline_defaults_to_an_hour():
    rec = Reconciler(MemoryStore(), {"fake": FakeBackend("fake")})
    assert rec.drain_timeout == 3600
