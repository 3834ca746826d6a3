"""The autoscaler's policy (pure) and its passes over a store and a LoadBoard."""

from __future__ import annotations

import pytest

from fngate.control import records as R
from fngate.control.autoscaler import Autoscaler, AutoscalerConfig, Policy, decide
from fngate.control.loadboard import LoadBoard
from fngate.control.records import GpuSpec
from fngate.control.store.memory import MemoryStore
from fngate.proxy.routing import LoadReport, VersionLoad
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
