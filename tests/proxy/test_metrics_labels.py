"""Attack 8 of issue 13: metric label values never come from unauthenticated input.
Requests for functions that are unknown, or not authenticated, count under one fixed
label; only routed, authenticated functions get a series of their own."""

from __future__ import annotations

import uuid

import httpx

from .conftest import FID, KEY, route


async def test_unknown_or_unauthenticated_functions_share_one_label(env, echo_up):
    env.publish([route(echo_up.port)])
    invented = [str(uuid.uuid4()) for _ in range(30)]
    async with httpx.AsyncClient() as c:
        for fid in invented[:10]:  # function-id header, no key
            assert (await c.get(f"{env.url}/", headers={"function-id": fid})).status_code == 401
        for fid in invented[10:20]:  # by Host, no key
            assert (await c.get(f"{env.url}/", headers={"Host": f"{fid}.invocation.example.com"})).status_code == 401
        for fid in invented[20:]:  # a valid key, an unknown function
            r = await c.get(f"{env.url}/", headers={"function-id": fid, "Authorization": f"Bearer {KEY}"})
            assert r.status_code == 404
        assert (await c.get(f"{env.url}/", headers=env.headers(key="nvapi-wrong"))).status_code == 401  # a real id, a bad key
        assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
        text = (await c.get(f"http://127.0.0.1:{env.gw.admin_port}/metrics")).text
    series = [line for line in text.splitlines() if line.startswith("fngate_requests_total{")]
    assert not [line for line in series if any(fid in line for fid in invented)]
    assert 'fngate_requests_total{function_id="unknown",status="401"} 21' in series
    assert 'fngate_requests_total{function_id="unknown",status="404"} 10' in series
    assert f'fngate_requests_total{{function_id="{FID}",status="200"}} 1' in series
    assert len(series) == 3
