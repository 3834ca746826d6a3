"""Per-instance concurrency, the per-version FIFO (positions, 429 when full, 504 when
the poll window passes), cold start, least-loaded choice and the LoadReports."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from fngate.proxy.config import GatewayConfig

from .conftest import VID, route


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(http_port=0, grpc_port=0, admin_port=0, header_grace=0.3, load_report_interval=0.1)


async def test_queue_positions_and_fifo_order(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    async with httpx.AsyncClient(timeout=30) as c:
        first = asyncio.create_task(c.get(f"{env.url}/?delay=0.6", headers=env.headers()))
        await asyncio.sleep(0.1)
        queued = []
        for i in range(3):
            queued.append(asyncio.create_task(c.get(f"{env.url}/?n={i}", headers=env.headers())))
            await asyncio.sleep(0.05)
        report = env.gw.load_report().versions[VID]
        assert report.queue_depth == 3 and report.in_flight == 1 and report.cold_waiting == 0
        ids = report.queued_ids
        assert [env.gw.limiter.position(VID, rid) for rid in ids] == [1, 2, 3]
        done_order = []
        for t in asyncio.as_completed(queued):
            r = await t
            done_order.append(r.json()["query"])
            assert r.headers["nvcf-reqid"] in ids  # the queued id is the request id
        assert (await first).status_code == 200
    assert done_order == ["n=0", "n=1", "n=2"]
    await asyncio.sleep(0.25)
    last = env.reports[-1].versions[VID]  # the LoadReporter pushed reports to the sink
    assert last.queue_depth == 0 and last.in_flight == 0 and last.requests == 4 and last.busy_seconds > 0.6


async def test_queue_full_gives_429_with_retry_after(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1, queue_limit=1)])
    async with httpx.AsyncClient(timeout=30) as c:
        busy = asyncio.create_task(c.get(f"{env.url}/?delay=0.5", headers=env.headers()))
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(c.get(f"{env.url}/", headers=env.headers()))
        await asyncio.sleep(0.1)
        r = await c.get(f"{env.url}/", headers=env.headers())
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["status"] == 429 and r.headers["nvcf-status"] == "errored"
        assert (await busy).status_code == 200 and (await waiting).status_code == 200


async def test_poll_window_504_for_queued_and_for_slow_instance(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    async with httpx.AsyncClient(timeout=30) as c:
        busy = asyncio.create_task(c.get(f"{env.url}/?delay=3", headers=env.headers(**{"NVCF-POLL-SECONDS": "5"})))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        r = await c.get(f"{env.url}/", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
        assert r.status_code == 504 and r.content == b"" and r.headers["nvcf-status"] == "errored"
        assert 1.2 < time.monotonic() - t0 < 2.0  # the window plus the grace
        assert len(env.gw.limiter.versions[VID].queue) == 0  # the queued request was removed
        busy.cancel()
        await asyncio.sleep(0.1)
        # on the instance, but no response headers within the window: 504 as well
        t0 = time.monotonic()
        slow = await c.get(f"{env.url}/?delay=3", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
        assert slow.status_code == 504 and slow.content == b""
        assert 1.2 < time.monotonic() - t0 < 2.0


async def test_cold_start_waits_for_an_endpoint(env, echo_up):
    env.publish([route(status="ACTIVE")])  # no ready instance yet
    async with httpx.AsyncClient(timeout=30) as c:
        pending = asyncio.create_task(c.get(f"{env.url}/", headers=env.headers()))
        await asyncio.sleep(0.3)
        load = env.gw.load_report().versions[VID]
        assert load.cold_waiting == 1 and load.queue_depth == 1
        env.publish([route(echo_up.port)])
        r = await pending
    assert r.status_code == 200


async def test_least_loaded_instance_is_preferred(env, echo_up):
    from fngate.backends.samples import echo

    from .conftest import Upstream

    other = await Upstream(echo.make_app()).start()
    try:
        env.publish([route(echo_up.port, other.port, max_concurrency=4)])
        async with httpx.AsyncClient(timeout=30) as c:
            # three long requests, then short ones: the short ones go to the idle instance
            longs = [asyncio.create_task(c.get(f"{env.url}/?delay=0.5", headers=env.headers())) for _ in range(2)]
            await asyncio.sleep(0.1)
            counts = dict(env.gw.limiter.in_flight)
            assert sorted(counts.values()) == [1, 1]  # spread, not piled on one
            await asyncio.gather(*longs)
    finally:
        await other.stop()


async def test_draining_endpoints_take_no_new_requests(env, echo_up):
    from dataclasses import replace

    r0 = route(echo_up.port)
    env.publish([replace(r0, endpoints=(replace(r0.endpoints[0], draining=True),))])
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(f"{env.url}/", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
    assert r.status_code == 504
