"""A drain cut by reconciler.drainTimeout is counted where an operator looks: the control
plane's /metrics (fngate_drain_timeouts_total, on the API port), as well as logged."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fngate.control.promtext import Exposition
from tests.e2e.helpers import write_config
from tests.support.serve_api import ServeApi, gpu_spec


@pytest.fixture
def api(fngate_serve, tmp_path):
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local", "probeInterval": 0.2, "stopGrace": 1}],
        reconciler={"resyncInterval": 1, "drainTimeout": 2},
    )
    return ServeApi(fngate_serve("--config", str(config)))


def _drain_timeouts(api: ServeApi) -> float:
    r = httpx.get(api.sp.api_url + "/metrics", headers=api.headers, timeout=10)
    assert r.status_code == 200, r.text
    return Exposition.parse(r.text, drop=()).total("fngate_drain_timeouts_total")


async def test_a_scale_down_cut_by_the_drain_timeout_is_counted_on_the_control_plane_metrics(api):
    fid, vid = api.create("drain-timeout")
    api.deploy(fid, vid, min_i=2, max_i=2, concurrency=1)
    api.wait_status(fid, vid, "ACTIVE", timeout=60)
    api.wait(lambda: len(api.ready_instances(fid, vid)) == 2, "two ready instances", timeout=60)
    assert _drain_timeouts(api) == 0

    async with httpx.AsyncClient() as client:
        # one long request on each instance: whichever is chosen, its drain cannot end in time
        slow = [asyncio.ensure_future(api.ainvoke(client, fid, "/echo?delay=30")) for _ in range(2)]
        await asyncio.sleep(1.5)
        path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
        await asyncio.to_thread(api.call, "PUT", path, {"deploymentSpecifications": [gpu_spec(min_i=1, max_i=1)]})
        await asyncio.to_thread(api.wait, lambda: _drain_timeouts(api) == 1, "the cut drain counted", 30)
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    assert "drain timed out after 2s" in api.sp.output()
