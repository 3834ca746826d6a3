"""CORS as NVCF's invocation service answers it (spec part 2, section 9): preflights on
the path routes answered by the gateway before any key check, never forwarded; the
Origin mirrored and nvcf-reqid/nvcf-status exposed on their answers; host-routed calls
without a CORS layer (key first, then the instance). HTTP/1.1, HTTP/2 and curl."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx
import pytest

from .conftest import FID, KEY, route

ORIGIN = "https://app.example.com"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


def _client(http2: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=not http2, http2=http2, timeout=30)


@pytest.mark.parametrize("http2", [False, True])
async def test_preflight_on_path_routes_is_answered_without_a_key_and_never_forwarded(env, raw_up, http2):
    env.publish([route(raw_up.port, inference_url="/infer")])
    async with _client(http2) as c:
        r = await c.options(f"{env.url}/v2/nvcf/pexec/functions/{FID}", headers=PREFLIGHT)
        assert r.status_code == 200 and r.content == b""
        h = r.headers
        assert h["access-control-allow-origin"] == ORIGIN and h["access-control-allow-credentials"] == "true"
        assert h["access-control-allow-methods"] == "POST" and h["access-control-allow-headers"] == "authorization,content-type"
        assert h["access-control-max-age"] == "86400" and h["allow"] == "POST"
        assert h["vary"] == "origin, access-control-request-method, access-control-request-headers"
        r = await c.options(f"{env.url}/v2/nvcf/pexec/status/some-id", headers={**PREFLIGHT, "Access-Control-Request-Method": "GET"})
        assert r.status_code == 200 and r.headers["allow"] == "GET,HEAD" and r.headers["access-control-allow-methods"] == "GET"
        for path in ("/health", "/no/such/route"):  # the health route and the 404 fallback
            r = await c.options(f"{env.url}{path}", headers=PREFLIGHT)
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert raw_up.heads == []  # no preflight reached the instance


@pytest.mark.parametrize("http2", [False, True])
async def test_answers_to_a_page_mirror_the_origin_and_expose_the_request_id(env, echo_up, http2):
    env.publish([route(echo_up.port, inference_url="/infer")])
    async with _client(http2) as c:
        auth = {"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"}
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"{}", headers=auth)
        assert r.status_code == 200 and r.headers["nvcf-reqid"]
        assert r.headers["access-control-allow-origin"] == ORIGIN and r.headers["access-control-allow-credentials"] == "true"
        assert {v.strip() for v in r.headers["access-control-expose-headers"].split(",")} == {"nvcf-reqid", "nvcf-status"}
        # the gateway's own errors too: a page can read why it failed
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"{}", headers={"Origin": ORIGIN})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
        r = await c.get(f"{env.url}/health", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        # no Origin, no CORS fields
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"{}", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and not [k for k in r.headers if k.startswith("access-control-")]


async def test_host_routed_calls_have_no_cors_layer(env, raw_up):
    env.publish([route(raw_up.port)])
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.options(f"{env.url}/x", headers={"Host": env.host(), **PREFLIGHT})
        assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
        assert r.text == "Header of type `authorization` was missing"
        r = await c.options(f"{env.url}/x", headers={**env.headers(), **PREFLIGHT})
        assert r.status_code == 200 and r.text == "ok"  # the instance's answer
    assert [h.split(b" ", 1)[0] for h in raw_up.heads] == [b"OPTIONS"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_preflight_over_both_protocols(env, echo_up):
    env.publish([route(echo_up.port)])
    for flag in ("--http1.1", "--http2-prior-knowledge"):
        args = ["curl", "-s", "-i", flag, "-X", "OPTIONS", "-H", f"Origin: {ORIGIN}", "-H", "Access-Control-Request-Method: POST"]
        proc = await asyncio.create_subprocess_exec(*args, f"{env.url}/v2/nvcf/pexec/functions/{FID}", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        text = out.decode("latin-1").lower()
        assert text.startswith("http/1.1 200" if flag == "--http1.1" else "http/2 200")
        assert f"\naccess-control-allow-origin: {ORIGIN}\r" in text and "\nallow: post\r" in text
