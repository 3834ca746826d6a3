"""Autoscaling end to end: scale from zero on a waiting request, up under load,
down to zero when idle, through the real gateway and real echo instances."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.e2e.helpers import gather_load, write_config
from tests.support.serve_api import ServeApi


@pytest.fixture
def api(fngate_serve, tmp_path):
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local", "probeInterval": 0.2}],
        autoscaler={"interval": 0.3, "window": 2, "idleTimeout": 3, "downStabilization": 1},
        reconciler={"resyncInterval": 1, "drainTimeout": 5},
    )
    sp = fngate_serve("--config", str(config))
    if "http_port" not in sp.ready:
        pytest.skip("the gateway is not wired into fngate serve yet")
    return ServeApi(sp)


@pytest.mark.slow  # seconds of load and of scale-down windows; the scale-from-zero path is in test_multiprocess
async def test_scale_from_zero_up_under_load_and_down_to_zero(api):
    fid, vid = api.create("e2e-autoscale")
    assert api.deploy(fid, vid, min_i=0, max_i=3)["deployment"]["functionStatus"] == "ACTIVE"
    assert api.ready_instances(fid, vid) == []

    # a request to a function at zero waits for the autoscaler to start an instance
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        r = await api.ainvoke(client, fid, headers={"NVCF-POLL-SECONDS": "30"})
    assert r.status_code == 200, r.text
    assert len(api.ready_instances(fid, vid)) == 1
    cold = time.monotonic() - started

    # 4 clients, 0.3 s per request, 1 slot per instance: utilisation 100 % -> more instances
    peak = 0
    load = asyncio.ensure_future(gather_load(api, fid, seconds=8, concurrency=4, path="/echo?delay=0.3"))
    while not load.done():
        peak = max(peak, len(await asyncio.to_thread(api.ready_instances, fid, vid)))
        await asyncio.sleep(0.2)
    statuses = load.result()
    assert peak >= 2, f"never scaled up under load (cold start took {cold:.1f}s)"
    assert set(statuses) == {200}, f"requests failed during scale-up: {sorted(set(statuses))}"

    # idle: down (draining, never cutting a request) and finally to zero, still ACTIVE
    await asyncio.to_thread(api.wait, lambda: not api.ready_instances(fid, vid), "scale to zero", 30)
    assert api.status(fid, vid) == "ACTIVE"
