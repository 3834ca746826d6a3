"""Graceful stop: requests in progress finish, idle connections close, new ones are refused."""

from __future__ import annotations

import asyncio

import httpx

from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import SnapshotHolder
from fngate.proxy.server import Gateway

from .conftest import Env, route


async def test_stop_lets_requests_in_progress_finish(echo_up):
    holder = SnapshotHolder()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=None), holder, "gw-stop")
    await gw.start()
    env = Env(gw, holder)
    env.publish([route(echo_up.port)])
    port = gw.http_port
    async with httpx.AsyncClient(timeout=10) as h1, httpx.AsyncClient(http1=False, http2=True, timeout=10) as h2c:
        await h1.get(f"{env.url}/", headers=env.headers())  # leaves an idle keep-alive connection
        slow1 = asyncio.create_task(h1.get(f"{env.url}/?delay=0.6", headers=env.headers()))
        slow2 = asyncio.create_task(h2c.get(f"{env.url}/?delay=0.6", headers=env.headers()))
        await asyncio.sleep(0.2)
        stopping = asyncio.create_task(gw.stop(grace=5))
        r1, r2 = await slow1, await slow2
        assert r1.status_code == 200 and r2.status_code == 200
        assert r1.headers.get("connection") == "close"
        await stopping
    try:
        await asyncio.open_connection("127.0.0.1", port)
        refused = False
    except OSError:
        refused = True
    assert refused and not gw.connections


async def test_pending_counts_what_a_stop_waits_for_and_stop_now_cuts_the_drain(echo_up):
    holder = SnapshotHolder()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=None), holder, "gw-stop-now")
    await gw.start()
    env = Env(gw, holder)
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient(timeout=30) as client:
        slow = asyncio.create_task(client.get(f"{env.url}/?delay=20", headers=env.headers()))
        for _ in range(100):
            if gw.pending().total:
                break
            await asyncio.sleep(0.02)
        assert gw.pending() == (1, 0, 0)
        stopping = asyncio.create_task(gw.stop(grace=30))
        await asyncio.sleep(0.3)
        assert not stopping.done(), "the stop did not wait for the request in flight"
        gw.stop_now()
        cut = await asyncio.wait_for(stopping, 3)
        assert cut.requests == 1, "stop returns what it cut"
        try:
            r = await slow
            assert r.status_code != 200
        except httpx.HTTPError:
            pass


async def test_stop_waits_on_the_last_request_to_end_not_on_a_poll(echo_up):
    """The drain is woken by the request that ends it (metrics.on_drained), so stop goes
    on in the same loop turn as that request's end, whatever the grace."""
    holder = SnapshotHolder()
    gw = Gateway(GatewayConfig(http_port=0, grpc_port=None, admin_port=None), holder, "gw-stop-event")
    await gw.start()
    env = Env(gw, holder)
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient(timeout=10) as client:
        slow = asyncio.create_task(client.get(f"{env.url}/?delay=0.5", headers=env.headers()))
        for _ in range(100):
            if gw.pending().total:
                break
            await asyncio.sleep(0.02)
        stopping = asyncio.create_task(gw.stop(grace=60))
        await asyncio.sleep(0.1)
        assert gw.metrics.on_drained is not None and not stopping.done()  # waiting on the drain
        ended = asyncio.Event()
        drained = gw.metrics.on_drained
        gw.metrics.on_drained = lambda: (ended.set(), drained())  # the same wake-up, observed
        await ended.wait()
        assert gw.pending().total == 0
        cut = await asyncio.wait_for(stopping, 5)
        assert cut.total == 0 and gw.metrics.on_drained is None
        assert (await slow).status_code == 200
