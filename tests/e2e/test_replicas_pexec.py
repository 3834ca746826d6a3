"""pexec across `fngate serve` replicas on one redis-server (issue 16): a request taken by
one replica is polled on the other (in progress, then the result; given up there, 504
here too); a delivered result is claimed atomically (exactly one poller, on any replica,
gets it; the others get NVCF's 404); progress and a large result's Location reach the
other replica; a status poll while Redis cannot be reached answers 503 problem+json with a
Retry-After rather than the 404 that would tell the client its request is gone."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.chaos.test_faults import OwnRedis
from tests.e2e.helpers import serve_replicas, write_config
from tests.support.serve_api import ServeApi


def _config(tmp_path):
    return write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])


@pytest.fixture
def two_replicas(fngate_serve, tmp_path, redis_url):
    return serve_replicas(fngate_serve, tmp_path, redis_url)


def _deployed(api_a: ServeApi, *others: ServeApi, name: str = "pexec-claim", **function: str) -> str:
    """A function created and deployed through A, once every replica's gateway serves it."""
    fid, vid = api_a.create(name, **function)
    api_a.deploy(fid, vid, min_i=1, max_i=1, concurrency=4)
    api_a.wait_status(fid, vid, "ACTIVE")
    for api in (api_a, *others):
        api.wait(lambda api=api: api.invoke(fid).status_code == 200, "the function served by this replica's gateway")
    return fid


def test_a_pexec_request_taken_by_one_replica_is_polled_on_the_other(two_replicas):
    """The result of a pexec request outlives the replica's memory: replica A takes it (202
    after a 1 s window), replica B's gateway answers the poll, in progress first, then the
    result. Before, B answered 404 (the result lived only in A)."""
    api_a, api_b = ServeApi(two_replicas[0]), ServeApi(two_replicas[1])
    fid = _deployed(api_a, api_b)

    auth = {"Authorization": f"Bearer {api_a.sp.admin_key}"}
    taken = httpx.post(
        f"{api_a.gateway}/v2/nvcf/pexec/functions/{fid}",
        headers={**auth, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "3", "Echo-Size": "5000"},  # pexec drops the query (NVCF)
        content=b"{}",
        timeout=30,
    )
    assert taken.status_code == 202, taken.text
    rid = taken.headers["nvcf-reqid"]
    status_url = f"{api_b.gateway}/v2/nvcf/pexec/status/{rid}"

    running = httpx.get(status_url, headers={**auth, "NVCF-POLL-SECONDS": "1"}, timeout=30)
    assert running.status_code == 202 and running.headers["nvcf-status"] == "in-progress", running.text
    assert running.headers["nvcf-reqid"] == rid

    assert httpx.get(status_url, headers={"Authorization": "Bearer nvapi-nobody"}, timeout=30).status_code == 401

    done = httpx.get(status_url, headers={**auth, "NVCF-POLL-SECONDS": "10"}, timeout=30)
    assert done.status_code == 200, done.text
    assert len(done.content) == 5000, done.content[:100]
    assert done.headers["nvcf-reqid"] == rid and done.headers["nvcf-status"] == "fulfilled"
    # delivered: gone everywhere (NVCF purges the mapping), A's memory too
    assert httpx.get(f"{api_a.gateway}/v2/nvcf/pexec/status/{rid}", headers=auth, timeout=30).status_code == 404
    assert httpx.get(status_url, headers=auth, timeout=30).status_code == 404

    missing = httpx.get(f"{api_b.gateway}/v2/nvcf/pexec/status/{uuid.uuid4()}", headers=auth, timeout=30)
    assert missing.status_code == 404


def test_a_pexec_request_given_up_by_its_replica_is_504_on_the_other(two_replicas):
    """No poll within NVCF's max(2 x poll, 10 s) after the 202: replica A gives the job up,
    and a poll on replica B gets the same 504 'worker did not acknowledge' as one on A
    (before, B kept answering 202 from the shared record until the result came)."""
    api_a, api_b = ServeApi(two_replicas[0]), ServeApi(two_replicas[1])
    fid = _deployed(api_a)
    auth = {"Authorization": f"Bearer {api_a.sp.admin_key}"}
    taken = httpx.post(
        f"{api_a.gateway}/v2/nvcf/pexec/functions/{fid}",
        headers={**auth, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "30"},
        content=b"{}",
        timeout=30,
    )
    assert taken.status_code == 202, taken.text
    rid = taken.headers["nvcf-reqid"]
    time.sleep(12)  # past the 10 s NVCF's worker waits for the next poll
    for api in (api_b, api_a):
        r = httpx.get(f"{api.gateway}/v2/nvcf/pexec/status/{rid}", headers={**auth, "NVCF-POLL-SECONDS": "1"}, timeout=30)
        assert r.status_code == 504 and "did not acknowledge" in r.text, (api.gateway, r.status_code, r.text)


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


def test_progress_and_a_large_result_reach_a_poll_on_the_other_replica(two_replicas):
    """The progress sample, taken by A (202), writes progress for 4 s then answers 10 MiB:
    polls on B get 202s with A's progress (NVCF-PERCENT-COMPLETE and the partial response),
    then the 302, and B serves the Location's zip (before: B's 202s had no progress, and
    the zip lived in A's directory only, so B answered 404)."""
    api_a, api_b = ServeApi(two_replicas[0]), ServeApi(two_replicas[1])
    fid = _deployed(api_a, api_b, name="pexec-progress", image="fngate/progress", inferenceUrl="/run")
    auth = {"Authorization": f"Bearer {api_a.sp.admin_key}"}
    size = 10 * 1024 * 1024
    job = {"steps": 4, "stepSeconds": 1.0, "resultBytes": size}
    taken = httpx.post(f"{api_a.gateway}/v2/nvcf/pexec/functions/{fid}", headers={**auth, "NVCF-POLL-SECONDS": "1"}, json=job, timeout=30)
    assert taken.status_code == 202, taken.text
    rid = taken.headers["nvcf-reqid"]
    percents: list[int] = []
    partials: list[dict] = []
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=30) as client:
        while True:
            r = client.get(f"{api_b.gateway}/v2/nvcf/pexec/status/{rid}", headers={**auth, "NVCF-POLL-SECONDS": "1"})
            if r.status_code != 202:
                break
            if "nvcf-percent-complete" in r.headers:
                percents.append(int(r.headers["nvcf-percent-complete"]))
                partials.append(r.json())
            assert time.monotonic() < deadline, "no result within 30 s"
        assert r.status_code == 302, (r.status_code, r.text)
        location = httpx.URL(r.headers["location"])
        assert location.path.startswith("/v2/nvcf/pexec/results/")
        assert percents and set(percents) <= {25, 50, 75, 100}, percents
        assert percents == sorted(percents)
        assert all(p == {"step": p["step"], "of": 4} for p in partials), partials
        for gateway in (api_b.gateway, api_a.gateway):  # the Location works on any replica, without a key
            got = client.get(f"{gateway}{location.raw_path.decode()}")
            assert got.status_code == 200, (gateway, got.status_code, got.text[:200])
            assert got.headers["content-type"] == "application/zip"
            with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
                assert zf.read(f"{rid}.response") == b"r" * size
        assert client.get(f"{api_b.gateway}/v2/nvcf/pexec/results/{uuid.uuid4()}-{'0' * 32}.zip").status_code == 404


def test_polls_on_the_other_replica_keep_a_long_request_alive(two_replicas):
    """A request running 14 s, taken by A with a 1 s window and then polled only on B every
    second: A's wait for the next poll (max(2 x 1 s, 10 s)) counts B's polls, so the result
    arrives on B (before: A gave up at 10 s and B's polls got 504 `worker did not
    acknowledge the status request.`)."""
    api_a, api_b = ServeApi(two_replicas[0]), ServeApi(two_replicas[1])
    fid = _deployed(api_a, api_b, name="pexec-long", image="fngate/progress", inferenceUrl="/run")
    auth = {"Authorization": f"Bearer {api_a.sp.admin_key}"}
    taken = httpx.post(
        f"{api_a.gateway}/v2/nvcf/pexec/functions/{fid}",
        headers={**auth, "NVCF-POLL-SECONDS": "1"},
        json={"steps": 4, "stepSeconds": 3.5},
        timeout=30,
    )
    assert taken.status_code == 202, taken.text
    rid = taken.headers["nvcf-reqid"]
    deadline = time.monotonic() + 40
    with httpx.Client(timeout=30) as client:
        while (
            r := client.get(f"{api_b.gateway}/v2/nvcf/pexec/status/{rid}", headers={**auth, "NVCF-POLL-SECONDS": "1"})
        ).status_code == 202:
            assert time.monotonic() < deadline, "no result within 40 s"
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["done"] is True and r.json()["steps"] == 4
