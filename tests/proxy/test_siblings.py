"""The --workers N pexec relay in one process: two gateways that are each other's
siblings share one routing snapshot; a result held by one is polled through the
other (proxy/calls/siblings.py), and the private listener serves status polls only.
(tests/e2e/test_multiprocess.py runs the same with real worker processes, marked slow.)"""

from __future__ import annotations

import asyncio

import httpx

from fngate.proxy.calls.siblings import Siblings
from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway
from tests.support.net import free_port

from .conftest import FID, KEY, Env, route

AUTH = {"Authorization": f"Bearer {KEY}"}


async def test_a_result_held_by_one_worker_is_polled_through_the_other(echo_up):
    holder = SnapshotHolder()
    ports = [free_port(), free_port()]
    config = GatewayConfig(http_port=0, grpc_port=None, admin_port=None, header_grace=0.3)
    workers = [Gateway(config, holder, f"gw-{i}", siblings=Siblings(i, ports)) for i in range(2)]
    for gw in workers:
        await gw.start()
    try:
        Env(workers[0], holder).publish([route(echo_up.port, inference_url="/infer")])
        first, second = (f"http://127.0.0.1:{gw.http_port}" for gw in workers)
        async with httpx.AsyncClient(timeout=20) as c:
            r = await c.post(
                f"{first}/v2/nvcf/pexec/functions/{FID}", content=b"abc", headers={**AUTH, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "2"}
            )
            assert r.status_code == 202
            rid = r.headers["nvcf-reqid"]
            assert rid.startswith("00")  # the worker that holds it is named in the id
            r = await c.get(f"{second}/v2/nvcf/pexec/status/{rid}", headers={**AUTH, "NVCF-POLL-SECONDS": "5"})
            assert r.status_code == 200 and r.json()["bodySize"] == 3 and r.headers["nvcf-reqid"] == rid
            missing = "01" + rid[2:]  # owned by the second worker, which has no such result
            r = await c.get(f"{first}/v2/nvcf/pexec/status/{missing}", headers=AUTH)
            assert r.status_code == 404
            private = f"http://127.0.0.1:{ports[0]}"
            r = await c.get(f"{private}/v1/anything", headers=AUTH)
            assert r.status_code == 404 and "status polls only" in r.json()["detail"]
        await workers[0].stop(grace=1)
        async with httpx.AsyncClient(timeout=20) as c:  # the owner is gone, and its results with it
            r = await c.get(f"{second}/v2/nvcf/pexec/status/{rid}", headers=AUTH)
        assert r.status_code == 404
    finally:
        for gw in workers:
            await gw.stop(grace=1)
        await asyncio.sleep(0)
