"""Legacy pexec: 200 within the poll window, 202 + polling otherwise, 404 for unknown or delivered ids."""

from __future__ import annotations

import asyncio

import httpx

from .conftest import FID, KEY, OTHER_KEY, VID, route

AUTH = {"Authorization": f"Bearer {KEY}"}


async def test_pexec_answers_within_the_window(env, echo_up):
    env.publish([route(echo_up.port, inference_url="/infer")])
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", json={"q": 1}, headers=AUTH)
        assert r.status_code == 200 and r.headers["nvcf-status"] == "fulfilled"
        doc = r.json()
        assert doc["path"] == "/infer" and doc["bodySize"] == len(b'{"q":1}')
        assert "nvcf-feature-disable-worker-compatibility" not in {k.lower() for k in doc["headers"]}
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}/versions/{VID}", content=b"x", headers=AUTH)
        assert r.status_code == 200 and r.json()["headers"]["NVCF-FUNCTION-VERSION-ID"] == VID


async def test_pexec_202_then_poll_for_the_result(env, echo_up):
    env.publish([route(echo_up.port, inference_url="/infer")])
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(
            f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"abc", headers={**AUTH, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "1.5"}
        )
        assert r.status_code == 202 and r.headers["nvcf-status"] == "in-progress"
        req_id = r.headers["nvcf-reqid"]
        # another key may not read the result
        other = await c.get(f"{env.url}/v2/nvcf/pexec/status/{req_id}", headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert other.status_code == 403
        r = await c.get(f"{env.url}/v2/nvcf/pexec/status/{req_id}", headers={**AUTH, "NVCF-POLL-SECONDS": "5"})
        assert r.status_code == 200 and r.headers["nvcf-status"] == "fulfilled"
        assert r.json()["bodySize"] == 3 and r.headers["nvcf-reqid"] == req_id
        # delivered: gone, as at NVCF (the mapping is purged)
        again = await c.get(f"{env.url}/v2/nvcf/pexec/status/{req_id}", headers=AUTH)
        assert again.status_code == 404


async def test_pexec_status_while_running_and_unknown(env, echo_up):
    env.publish([route(echo_up.port, inference_url="/infer")])
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", headers={**AUTH, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "2.5"})
        assert r.status_code == 202
        req_id = r.headers["nvcf-reqid"]
        r = await c.get(f"{env.url}/v2/nvcf/pexec/status/{req_id}", headers={**AUTH, "NVCF-POLL-SECONDS": "1"})
        assert r.status_code == 202 and r.headers["nvcf-status"] == "in-progress"
        r = await c.get(f"{env.url}/v2/nvcf/pexec/status/00000000-0000-0000-0000-000000000099", headers=AUTH)
        assert r.status_code == 404 and r.json()["status"] == 404


async def test_pexec_queued_past_the_window_is_504(env, echo_up):
    env.publish([route(status="ACTIVE", inference_url="/infer")])  # no instance at all
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", headers={**AUTH, "NVCF-POLL-SECONDS": "1"})
    assert r.status_code == 504 and r.headers["nvcf-status"] == "errored"
    await asyncio.sleep(0)
    assert env.gw.load_report().versions[VID].queue_depth == 0


async def test_pexec_instance_errors_become_problem_json(env, echo_up):
    env.publish([route(echo_up.port, inference_url="/infer")])
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", headers={**AUTH, "Echo-Status": "422"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "urn:inference-service:problem-details:unprocessable-entity",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": "Inference error",
    }
    assert r.headers["nvcf-status"] == "errored"
