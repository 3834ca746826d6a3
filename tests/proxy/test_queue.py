"""Per-instance concurrency, the per-version FIFO (positions, 429 when full, 504 when
the poll window passes), cold start, least-loaded choice and the LoadReports."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from fngate.proxy.config import GatewayConfig
from tests.support.waiting import wait_for

from .conftest import VID, route


def in_flight(env) -> int:
    return sum(env.gw.limiter.in_flight.values())


def queue_depth(env) -> int:
    version = env.gw.load_report().versions.get(VID)
    return version.queue_depth if version is not None else 0


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(http_port=0, grpc_port=0, admin_port=0, header_grace=0.3, load_report_interval=0.1)


async def test_queue_positions_and_fifo_order(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    async with httpx.AsyncClient(timeout=30) as c:
        first = asyncio.create_task(c.get(f"{env.url}/?delay=0.6", headers=env.headers()))
        await wait_for(lambda: in_flight(env) == 1, what="the first request on the instance")
        queued = []
        for i in range(3):
            queued.append(asyncio.create_task(c.get(f"{env.url}/?n={i}", headers=env.headers())))
            await wait_for(lambda i=i: queue_depth(env) == i + 1, what=f"request {i} in the queue")
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

    def settled():  # the LoadReporter pushes reports to the sink every 0.1 s
        last = env.reports[-1].versions.get(VID) if env.reports else None
        return last if last is not None and (last.queue_depth, last.in_flight, last.requests) == (0, 0, 4) else None

    last = await wait_for(settled, what="a load report after the four requests")
    assert last.busy_seconds > 0.6


async def test_queue_full_gives_429_with_retry_after(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1, queue_limit=1)])
    async with httpx.AsyncClient(timeout=30) as c:
        busy = asyncio.create_task(c.get(f"{env.url}/?delay=0.5", headers=env.headers()))
        await wait_for(lambda: in_flight(env) == 1, what="the busy request on the instance")
        waiting = asyncio.create_task(c.get(f"{env.url}/", headers=env.headers()))
        await wait_for(lambda: queue_depth(env) == 1, what="the second request in the queue")
        r = await c.get(f"{env.url}/", headers=env.headers())
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["status"] == 429 and r.headers["nvcf-status"] == "errored"
        assert (await busy).status_code == 200 and (await waiting).status_code == 200


async def test_poll_window_504_for_queued_and_for_slow_instance(env, echo_up):
    env.publish([route(echo_up.port, max_concurrency=1)])
    async with httpx.AsyncClient(timeout=30) as c:
        busy = asyncio.create_task(c.get(f"{env.url}/?delay=3", headers=env.headers(**{"NVCF-POLL-SECONDS": "5"})))
        await wait_for(lambda: in_flight(env) == 1, what="the busy request on the instance")
        t0 = time.monotonic()
        r = await c.get(f"{env.url}/", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
        assert r.status_code == 504 and r.content == b"" and r.headers["nvcf-status"] == "errored"
        assert time.monotonic() - t0 >= 1.2  # not before the window plus the grace
        assert not busy.done()  # the window ended it, not a slot coming free
        assert len(env.gw.limiter.versions[VID].queue) == 0  # the queued request was removed
        busy.cancel()
        await wait_for(lambda: in_flight(env) == 0, what="the cancelled request's slot")
        # on the instance, but no response headers within the window: 504 as well
        # (an answer within the window, after the 3 s delay, would have been a 200)
        t0 = time.monotonic()
        slow = await c.get(f"{env.url}/?delay=3", headers=env.headers(**{"NVCF-POLL-SECONDS": "1"}))
        assert slow.status_code == 504 and slow.content == b""
        assert time.monotonic() - t0 >= 1.2


async def test_cold_start_waits_for_an_endpoint(env, echo_up):
    env.publish([route(status="ACTIVE")])  # no ready instance yet
    async with httpx.AsyncClient(timeout=30) as c:
        pending = asyncio.create_task(c.get(f"{env.url}/", headers=env.headers()))
        await wait_for(lambda: queue_depth(env) == 1, what="the request waiting for an instance")
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
            await wait_for(lambda: in_flight(env) == 2, what="both requests on an instance")
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
