"""NVCF's metric names on the admin /metrics (spec part 2, 10.1), beside fngate's, with
no label value taken from unauthenticated input. HTTP/1.1 and HTTP/2 clients."""

from __future__ import annotations

import uuid

import httpx
import pytest

from fngate.proxy.calls.nvcf_metrics import NvcfMetrics, path_endpoint

from .conftest import FID, KEY, VID, route

PEXEC = "/v2/nvcf/pexec/functions/{function_id}"
FID_COLD = str(uuid.UUID(int=77))


async def _metrics(env) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as c:
        return (await c.get(f"http://127.0.0.1:{env.gw.admin_port}/metrics")).text.splitlines()


@pytest.mark.parametrize("http2", [False, True])
async def test_invocation_service_names(env, echo_up, http2):
    cold = route(fid=FID_COLD, vid=str(uuid.UUID(int=78)), inference_url="/infer")  # ACTIVE, no instance yet
    env.publish([route(echo_up.port, inference_url="/infer"), cold])
    invented = [str(uuid.uuid4()) for _ in range(3)]
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=30) as c:
        assert (await c.post(f"{env.url}/x", content=b"a", headers=env.headers())).status_code == 200
        assert (await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"a", headers=auth)).status_code == 200
        for fid in invented:  # no key, and a key for a function that does not exist
            assert (await c.post(f"{env.url}/x", headers={"function-id": fid})).status_code == 401
            assert (await c.post(f"{env.url}/v2/nvcf/pexec/functions/{fid}", headers=auth)).status_code == 404
        assert (await c.get(f"{env.url}/no/route")).status_code == 404
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID_COLD}", headers={**auth, "NVCF-POLL-SECONDS": "1"})
        assert r.status_code == 504
    lines = await _metrics(env)
    text = "\n".join(lines)
    assert not [fid for fid in invented if fid in text]
    assert f'function_request{{function_id="{FID}",function_version_id="{VID}",nca_id="fngate"}} 2' in lines
    assert f'function_request_latency_count{{function_id="{FID}",function_version_id="{VID}"}} 2' in lines
    assert 'app_invocation_error{http_status_code="401",function_id=""} 3' in lines
    assert 'app_invocation_error{http_status_code="404",function_id=""} 4' in lines
    assert 'app_invocation_error{http_status_code="499",function_id=""} 0' in lines  # registered at 0, as NVCF
    assert f'app_invocation_error{{http_status_code="504",function_id="{FID_COLD}"}} 1' in lines
    assert 'axum_http_requests_total{method="POST",endpoint="TLB",status="200"} 1' in lines
    assert 'axum_http_requests_total{method="POST",endpoint="TLB",status="401"} 3' in lines
    assert f'axum_http_requests_total{{method="POST",endpoint="{PEXEC}",status="200"}} 1' in lines
    assert f'axum_http_requests_total{{method="POST",endpoint="{PEXEC}",status="404"}} 3' in lines
    assert f'axum_http_requests_total{{method="POST",endpoint="{PEXEC}",status="504"}} 1' in lines
    assert 'axum_http_requests_total{method="GET",endpoint="UNKNOWN",status="404"} 1' in lines
    assert any(
        line.startswith('axum_http_requests_duration_seconds_bucket{method="POST",endpoint="TLB",status="200",le=') for line in lines
    )
    assert "# TYPE function_request_latency histogram" in lines
    # fngate's own series are still there
    assert f'fngate_requests_total{{function_id="{FID}",status="200"}} 1' in lines


def test_labels_come_from_fixed_sets():
    m = NvcfMetrics()
    m.http_request("BREW", path_endpoint(b"/v2/nvcf/pexec/functions/x/versions/y?q=1"), 400, 0.1)
    m.app_error(404, "a-function")  # only 504 and 499 keep the id, as NVCF
    text = m.render()
    assert (
        'axum_http_requests_total{method="OTHER",endpoint="/v2/nvcf/pexec/functions/{function_id}/versions/{function_version_id}",status="400"} 1'
        in text
    )
    assert 'app_invocation_error{http_status_code="404",function_id=""} 1' in text
    assert [path_endpoint(t) for t in (b"/health", b"/v2/nvcf/pexec/status/r", b"/v2/nvcf/pexec/x", b"/anything")] == [
        "/health",
        "/v2/nvcf/pexec/status/{request_id}",
        "UNKNOWN",
        "UNKNOWN",
    ]
