"""The autoscaler's policy (pure) and its passes over a store and a LoadBoard."""

from __future__ import annotations

import pytest

from fngate.control import records as R
from fngate.control.autoscaler import Autoscaler, AutoscalerConfig, Policy, decide
from fngate.control.loadboard import LoadBoard
from fngate.control.records import GpuSpec
from fngate.control.store.memory import MemoryStore
from fngate.proxy.routing.snapshot import LoadReport, VersionLoad
from tests.support.helpers import deploy, gpu_spec

NVCF = Policy(70, 1.2, 30, 0.8)


@pytest.mark.parametrize(
    "current,ready,util,queue,cold,idle,lo,hi,want",
    [
        (5, 5, 80, 0, 0, 0, 1, 10, 6),  # ceil(5 x 1.2)
        (1, 1, 90, 0, 0, 0, 1, 10, 2),  # at least one more
        (9, 9, 95, 0, 0, 0, 1, 10, 10),  # clamped to max
        (2, 2, 10, 3, 0, 0, 1, 10, 3),  # a queue is saturation
        (5, 5, 20, 0, 0, 0, 1, 10, 4),  # floor(5 x 0.8)
        (2, 2, 20, 0, 0, 0, 2, 10, 2),  # not below min
        (1, 1, 0, 0, 0, 10, 0, 3, 1),  # idle, but not for long enough
        (1, 1, 0, 0, 0, 99, 0, 3, 0),  # scale to zero
        (1, 1, 0, 0, 0, 99, 1, 3, 1),  # ... only when minInstances is 0
        (0, 0, 0, 0, 1, 0, 0, 3, 1),  # scale from zero: a request waits
        (0, 0, 0, 0, 0, 0, 0, 3, 0),  # nothing waits: stay at zero
        (3, 1, 100, 0, 0, 0, 1, 10, 3),  # instances still starting: wait for them
        (3, 0, 0, 0, 0, 0, 1, 10, 3),  # none ready yet: never scale down on that
        (4, 4, 50, 0, 0, 0, 1, 10, 4),  # between thresholds
    ],
)
def test_policy(current, ready, util, queue, cold, idle, lo, hi, want):
    assert decide(current, ready, util, queue, cold, idle, lo, hi, NVCF, idle_timeout=60)[0] == want


def test_spec_overrides_the_defaults():
    spec = {
        "autoscalingConfiguration": {
            "scaleUpDetails": {"factor": 2.0, "threshold": 50},
            "scaleDownDetails": {"factor": 0.5, "threshold": 10},
        }
    }
    p = Policy.of(AutoscalerConfig(), GpuSpec.parse(spec))
    assert decide(4, 4, 60, 0, 0, 0, 1, 100, p, 60)[0] == 8
    assert decide(4, 4, 20, 0, 0, 0, 1, 100, p, 60)[0] == 4
    assert decide(4, 4, 5, 0, 0, 0, 1, 100, p, 60)[0] == 2


def test_config_from_file_section():
    cfg = AutoscalerConfig.from_config({"interval": 1, "idleTimeout": 5, "up-threshold": 60})
    assert (cfg.interval, cfg.idle_timeout, cfg.up_threshold) == (1, 5, 60)
    with pytest.raises(ValueError, match="unknown autoscaler setting 'bogus'"):
        AutoscalerConfig.from_config({"bogus": 1})


async def _ready_instances(store, vid, gsid, n):
    for i in range(n):
        await store.put(
            R.INSTANCES,
            R.instance_key(vid, f"i{i}"),
            {
                "instanceId": f"i{i}",
                "functionVersionId": vid,
                "instanceStatus": "ACTIVE",
                "gpuSpecificationId": gsid,
                "host": "127.0.0.1",
                "port": 1000 + i,
            },
        )


async def test_passes_scale_up_on_busy_seconds_and_down_to_zero_when_idle():
    now = [1000.0]
    store, board = MemoryStore(), LoadBoard(clock=lambda: now[0])
    cfg = AutoscalerConfig(window=10, down_stabilization=0, idle_timeout=30)
    scaler = Autoscaler(store, board, cfg, clock=lambda: now[0])
    spec = gpu_spec(0, 4, maxRequestConcurrency=2)
    _fid, vid = await deploy(store, specs=[spec])  # ACTIVE from zero
    key = R.scale_key(vid, spec["gpuSpecificationId"])

    board.update(LoadReport("gw", now[0], {vid: VersionLoad(cold_waiting=1, queue_depth=1, last_request_at=now[0])}))
    await scaler.tick()
    assert (await store.get(R.SCALE, key)).value["replicas"] == 1

    await _ready_instances(store, vid, spec["gpuSpecificationId"], 1)
    for step in range(1, 4):  # 2 slots, busy 1.8 slot-seconds per second: 90 %
        now[0] += 1
        board.update(LoadReport("gw", now[0], {vid: VersionLoad(busy_seconds=1.8 * step, requests=step, last_request_at=now[0])}))
        await scaler.tick()
    assert (await store.get(R.SCALE, key)).value["replicas"] == 2

    await _ready_instances(store, vid, spec["gpuSpecificationId"], 2)
    last = now[0]
    for _ in range(15):  # no new busy time: utilisation falls to 0, then the idle timeout passes
        now[0] += 3
        board.update(LoadReport("gw", now[0], {vid: VersionLoad(busy_seconds=5.4, requests=3, last_request_at=last)}))
        await scaler.tick()
        if (await store.get(R.SCALE, key)).value["replicas"] == 1:
            await store.delete(R.INSTANCES, R.instance_key(vid, "i1"))
    doc = (await store.get(R.SCALE, key)).value
    assert doc["replicas"] == 0 and "scale to zero" in doc["reason"]


async def test_no_scale_down_within_the_stabilization_window_after_a_change():
    now = [1000.0]
    store, board = MemoryStore(), LoadBoard(clock=lambda: now[0])
    scaler = Autoscaler(store, board, AutoscalerConfig(window=4, down_stabilization=30, idle_timeout=3600), clock=lambda: now[0])
    spec = gpu_spec(1, 4, maxRequestConcurrency=1)
    _fid, vid = await deploy(store, specs=[spec])
    gsid = spec["gpuSpecificationId"]
    key = R.scale_key(vid, gsid)
    await _ready_instances(store, vid, gsid, 1)
    busy = 0.0
    while (rec := await store.get(R.SCALE, key)) is None or rec.value["replicas"] < 2:  # one slot, always busy
        now[0] += 1
        busy += 1.0
        board.update(LoadReport("gw", now[0], {vid: VersionLoad(busy_seconds=busy, in_flight=1, last_request_at=now[0])}))
        await scaler.tick()
        assert now[0] < 1010, "never scaled up"
    scaled_up_at = now[0]
    await _ready_instances(store, vid, gsid, 2)
    replicas = []
    while now[0] < scaled_up_at + 40:  # idle from here: 0 % utilisation
        now[0] += 1
        board.update(LoadReport("gw", now[0], {vid: VersionLoad(busy_seconds=busy, last_request_at=scaled_up_at)}))
        await scaler.tick()
        replicas.append((now[0] - scaled_up_at, (await store.get(R.SCALE, key)).value["replicas"]))
    assert all(n == 2 for t, n in replicas if t < 30), "scaled down within the stabilization window"
    first_down = next(t for t, n in replicas if n == 1)
    assert 30 <= first_down <= 31


async def test_a_scale_write_that_conflicts_is_decided_again_on_the_next_pass():
    now = [1000.0]
    inner, board = MemoryStore(), LoadBoard(clock=lambda: now[0])
    store = _ConflictOnce(inner)
    scaler = Autoscaler(store, board, AutoscalerConfig(window=4, down_stabilization=0), clock=lambda: now[0])
    spec = gpu_spec(1, 4, maxRequestConcurrency=1)
    _fid, vid = await deploy(inner, specs=[spec])
    key = R.scale_key(vid, spec["gpuSpecificationId"])
    await _ready_instances(inner, vid, spec["gpuSpecificationId"], 1)
    board.update(LoadReport("gw", now[0], {vid: VersionLoad(queue_depth=3, in_flight=1, last_request_at=now[0])}))
    await scaler.tick()  # its write loses to another writer (an undeploy, a second replica)
    assert (await inner.get(R.SCALE, key)).value["reason"] == "someone else"
    now[0] += 1
    await scaler.tick()
    doc = (await inner.get(R.SCALE, key)).value
    assert doc["replicas"] == 2 and "queued" in doc["reason"]


class _ConflictOnce:
    """A store whose first scale write meets another writer's write to the same key."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.interfered = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def put(self, kind, key, value, *, expect=None):
        if kind == R.SCALE and not self.interfered:
            self.interfered = True
            await self.inner.put(kind, key, {"replicas": 1, "reason": "someone else"})
        return await self.inner.put(kind, key, value, expect=expect)
