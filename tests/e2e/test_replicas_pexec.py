"""pexec across `fngate serve` replicas on one redis-server (issue 16): a delivered result
is claimed atomically (exactly one poller, on any replica, gets it; the others get NVCF's
404), and a status poll while Redis cannot be reached answers 503 problem+json with a
Retry-After rather than the 404 that would tell the client its request is gone."""

from __future__ import annotations

import base64
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.chaos.test_faults import OwnRedis
from tests.e2e.helpers import write_config
from tests.support.serve_api import ServeApi


def _config(tmp_path):
    return write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])


@pytest.fixture
def two_replicas(fngate_serve, tmp_path, redis_url):
    env = {"FNGATE_ADMIN_KEY": "nvapi-replicas-admin", "FNGATE_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
    config = _config(tmp_path)
    return [fngate_serve("--config", str(config), "--store", redis_url, env=env, data_dir=tmp_path / name) for name in ("a", "b")]


def _deployed(api_a: ServeApi, *others: ServeApi) -> str:
    fid, vid = api_a.create("pexec-claim")
    api_a.deploy(fid, vid, min_i=1, max_i=1, concurrency=4)
    api_a.wait_status(fid, vid, "ACTIVE")
    for api in (api_a, *others):
        api.wait(lambda api=api: api.invoke(fid).status_code == 200, "the function served by this replica's gateway")
    return fid


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_a_result_is_delivered_to_exactly_one_poller_across_replicas(two_replicas, http2):
    """Taken by A (202), then polled at once from 3 clients on B and 1 on A: exactly one
    gets the 200 with the body, every other poll 404 (before, each B poller that saw the
    stored result was answered 200 too)."""
    api_a, api_b = ServeApi(two_replicas[0]), ServeApi(two_replicas[1])
    fid = _deployed(api_a, api_b)
    auth = {"Authorization": f"Bearer {api_a.sp.admin_key}"}
    for _round in range(3):
        taken = httpx.post(
            f"{api_a.gateway}/v2/nvcf/pexec/functions/{fid}",
            headers={**auth, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "2", "Echo-Size": "4000"},
            content=b"{}",
            timeout=30,
        )
        assert taken.status_code == 202, taken.text
        rid = taken.headers["nvcf-reqid"]
        gateways = [api_b.gateway] * 3 + [api_a.gateway]

        def poll(gateway: str, rid: str = rid) -> tuple[int, int]:
            with httpx.Client(http1=not http2, http2=http2, timeout=30) as client:
                r = client.get(f"{gateway}/v2/nvcf/pexec/status/{rid}", headers={**auth, "NVCF-POLL-SECONDS": "10"})
                return r.status_code, len(r.content)

        with ThreadPoolExecutor(len(gateways)) as pool:
            answers = list(pool.map(poll, gateways))
        assert sorted(s for s, _ in answers) == [200, 404, 404, 404], answers
        assert (200, 4000) in answers, answers
        for gateway in (api_a.gateway, api_b.gateway):  # delivered: gone everywhere
            assert httpx.get(f"{gateway}/v2/nvcf/pexec/status/{rid}", headers=auth, timeout=30).status_code == 404


def test_a_status_poll_while_redis_is_away_is_503_with_retry_after(fngate_serve, tmp_path):
    """A poll for a request this replica does not hold must read Redis; Redis away, the
    answer is 503 problem+json with Retry-After (before: 404, 'your request is gone')."""
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        sp = fngate_serve("--config", str(_config(tmp_path)), "--store", redis.url)
        api = ServeApi(sp)
        auth = {"Authorization": f"Bearer {sp.admin_key}"}
        url = f"{api.gateway}/v2/nvcf/pexec/status/{uuid.uuid4()}"
        assert httpx.get(url, headers=auth, timeout=30).status_code == 404  # Redis up: unknown everywhere
        redis.stop()
        for http2 in (False, True):
            with httpx.Client(http1=not http2, http2=http2, timeout=30) as client:
                r = client.get(url, headers={**auth, "NVCF-POLL-SECONDS": "1"})
            assert r.status_code == 503, (r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["status"] == 503 and int(r.headers["retry-after"]) >= 1
        redis.start()
        deadline = time.monotonic() + 20
        while (status := httpx.get(url, headers=auth, timeout=30).status_code) != 404:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.2)
    finally:
        if redis.proc is not None and redis.proc.poll() is None:
            redis.stop()
