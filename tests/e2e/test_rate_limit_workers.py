"""One rate limit across gateway workers on Redis (proxy/routing/rate_lease.py): `fngate serve
--workers 2 --store redis://...`, requests on new connections (so both workers serve
them), and the count of 200s stays within the stated accuracy."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.e2e.test_multiprocess import _requests_by_worker
from tests.support.serve_api import ServeApi


def _serve(fngate_serve, tmp_path, redis_url) -> ServeApi:
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])
    return ServeApi(fngate_serve("--config", str(config), "--workers", "2", "--store", redis_url))


def test_a_limit_holds_across_two_workers(fngate_serve, tmp_path, redis_url):
    api = _serve(fngate_serve, tmp_path, redis_url)
    fid, vid = api.create("rl-workers", rateLimit={"rateLimit": "5-H"})  # no refill within the test, however slow the machine
    api.deploy(fid, vid, min_i=1, max_i=1, concurrency=8)
    api.wait_status(fid, vid, "ACTIVE", timeout=60)
    codes = []
    for _ in range(30):  # a new connection each: the kernel spreads them over both workers
        codes.append(api.invoke(fid).status_code)
        time.sleep(0.05)  # the leases run in the background
    per_worker = _requests_by_worker(httpx.get(f"http://127.0.0.1:{api.sp.ready['admin_port']}/metrics", timeout=10).text)
    assert len(per_worker) == 2, per_worker  # both workers answered
    # one bucket of 5 for both, within the accuracy rate_lease.py states: each of the 2
    # workers may admit its first batch (1 here) on credit before its first lease returns,
    # and a token leased but unspent by one worker may be missing to the other
    assert 5 - 1 <= codes.count(200) <= 5 + 2 * 1, codes
    assert set(codes) == {200, 429}


@pytest.mark.slow
def test_load_on_two_workers_stays_within_the_stated_accuracy(fngate_serve, tmp_path, redis_url):
    """20 connections hammer a 50-S limit for 6 s: at most 50 x 6 + 50 (the full bucket) +
    2 batches of credit may pass, and tokens leased but unspent at most 2 batches less."""
    api = _serve(fngate_serve, tmp_path, redis_url)
    fid, vid = api.create("rl-load", rateLimit={"rateLimit": "50-S"})
    api.deploy(fid, vid, min_i=1, max_i=1, concurrency=32)
    api.wait_status(fid, vid, "ACTIVE", timeout=60)
    seconds = 6.0

    async def load() -> list[int]:
        codes: list[int] = []
        end = time.monotonic() + seconds

        async def one() -> None:
            async with httpx.AsyncClient() as c:
                while time.monotonic() < end:
                    codes.append((await api.ainvoke(c, fid)).status_code)

        await asyncio.gather(*(one() for _ in range(20)))
        return codes

    started = time.monotonic()
    codes = asyncio.run(load())
    elapsed = time.monotonic() - started
    ok = codes.count(200)
    bound = 50 * elapsed + 50
    print(f"rate-limit load: {len(codes)} requests, {ok} passed in {elapsed:.2f} s; one bucket allows {bound:.0f}")
    assert ok <= bound + 2 * 5, (ok, bound)
    assert ok >= 50 * (elapsed - 1) - 2 * 5, (ok, bound)  # the first second may go to leases warming up
