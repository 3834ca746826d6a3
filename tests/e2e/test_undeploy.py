"""Undeploy end to end: graceful lets the in-flight request finish before the
instance stops; non-graceful cuts it at once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.e2e.helpers import alive, instance_pid, write_config
from tests.support.serve_api import ServeApi


@pytest.fixture
def api(fngate_serve, tmp_path):
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local", "probeInterval": 0.2, "stopGrace": 2}],
        reconciler={"resyncInterval": 1, "drainTimeout": 10},
    )
    sp = fngate_serve("--config", str(config))
    if "http_port" not in sp.ready:
        pytest.skip("the gateway is not wired into fngate serve yet")
    return ServeApi(sp)


@pytest.mark.slow  # waits out a drain; `make test` keeps the reconciler's undeploy tests
async def test_graceful_then_non_graceful_undeploy(api):
    fid, vid = api.create("e2e-undeploy")
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    [inst] = api.ready_instances(fid, vid)
    pid = instance_pid(api.sp.data_dir, vid, inst["instanceId"])
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"

    async with httpx.AsyncClient() as client:
        slow = asyncio.ensure_future(api.ainvoke(client, fid, "/echo?delay=2"))
        await asyncio.sleep(0.5)
        undeployed = await asyncio.to_thread(api.call, "DELETE", path + "?graceful=true")
        assert undeployed["function"]["status"] == "INACTIVE"
        r = await slow
    assert r.status_code == 200, "a graceful undeploy must let the in-flight request finish"
    assert api.invoke(fid).status_code == 404  # no new requests for an INACTIVE function
    await asyncio.to_thread(api.wait, lambda: not alive(pid), "the drained instance to stop", 20)
    await asyncio.to_thread(
        api.wait,
        lambda: httpx.get(api.sp.api_url + path, headers=api.headers).status_code == 404,
        "the drained deployment to be removed",
        20,
    )

    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    [inst] = api.ready_instances(fid, vid)
    pid = instance_pid(api.sp.data_dir, vid, inst["instanceId"])
    async with httpx.AsyncClient() as client:
        slow = asyncio.ensure_future(api.ainvoke(client, fid, "/echo?delay=5"))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.to_thread(api.call, "DELETE", path)
        try:
            r = await slow
            cut = r.status_code != 200
        except httpx.HTTPError:
            cut = True
    assert cut and time.monotonic() - started < 4, "a non-graceful undeploy cuts in-flight requests at once"
    await asyncio.to_thread(api.wait, lambda: not alive(pid), "the instance to stop", 10)
