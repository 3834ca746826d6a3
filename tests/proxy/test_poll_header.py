"""NVCF-POLL-SECONDS as NVCF parses it (spec part 2, 0.2 item 3), on every route that
reads it (host-routed, pexec, status polls), over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import httpx
import pytest

from .conftest import FID, KEY, route

BAD = {"status": 400, "title": "Bad Request", "detail": "failed to parse poll duration"}


@pytest.mark.parametrize("http2", [False, True])
async def test_bad_values_are_400_with_nvcfs_detail(env, echo_up, http2):
    env.publish([route(echo_up.port, inference_url="/infer")])
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=30) as c:
        for bad in ("-1", "abc", "3601", "1.5", "+"):
            poll = {"NVCF-POLL-SECONDS": bad}
            r = await c.get(f"{env.url}/", headers=env.headers(**poll))
            assert (r.status_code, r.json()) == (400, BAD), bad
            r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"{}", headers={**auth, **poll})
            assert (r.status_code, r.json()) == (400, BAD), bad
            r = await c.get(f"{env.url}/v2/nvcf/pexec/status/00000000-0000-0000-0000-000000000000", headers={**auth, **poll})
            assert (r.status_code, r.json()) == (400, BAD), bad
        # the key is checked first, as NVCF does: no key and a bad window is 401
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"{}", headers={"NVCF-POLL-SECONDS": "abc"})
        assert r.status_code == 401
        r = await c.get(f"{env.url}/", headers={"Host": env.host(), "NVCF-POLL-SECONDS": "abc"})
        assert r.status_code == 401
        # 0 is a valid u64, raised to 1 s as NVCF does; a leading + parses as in Rust
        for value, sent in (("0", "1"), ("+7", "7"), ("3600", "3600")):
            r = await c.get(f"{env.url}/", headers=env.headers(**{"NVCF-POLL-SECONDS": value}))
            got = {k.lower(): v for k, v in r.json()["headers"].items()}
            assert r.status_code == 200 and abs(int(got["nvcf-poll-seconds"]) - int(sent)) <= 1


@pytest.mark.parametrize("http2", [False, True])
async def test_pexec_without_worker_compatibility_passes_the_instances_error(env, echo_up, http2):
    """`nvcf-feature-disable-worker-compatibility: true` (spec part 2, 1.10): no problem+json
    rewrite, and the instance is told, as for host-routed calls."""
    env.publish([route(echo_up.port, inference_url="/infer")])
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=30) as c:
        url = f"{env.url}/v2/nvcf/pexec/functions/{FID}"
        r = await c.post(url, content=b"{}", headers={**auth, "Echo-Status": "422", "nvcf-feature-disable-worker-compatibility": "true"})
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/json")
        assert {k.lower(): v for k, v in r.json()["headers"].items()}["nvcf-feature-disable-worker-compatibility"] == "true"
        r = await c.post(url, content=b"{}", headers={**auth, "Echo-Status": "422"})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
