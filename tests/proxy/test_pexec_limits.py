"""Pexec results the gateway cannot hold: larger than `pexec_max_result_bytes` with worker
compatibility off (with it on they go large: a 302, tests/proxy/test_pexec_contract.py),
or a request whose client went away after the 202 but before its body was all in."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest

from .conftest import FID, KEY, route

AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT = 1000


@pytest.fixture
def gateway_config(gateway_config):
    return replace(gateway_config, pexec_max_result_bytes=LIMIT, client_body_idle_timeout=10)


async def test_a_result_over_the_limit_without_compat_is_a_502(env, echo_up):
    env.publish([route(echo_up.port, inference_url="/infer")])
    no_compat = {**AUTH, "nvcf-feature-disable-worker-compatibility": "true"}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", headers={**no_compat, "Echo-Size": str(LIMIT * 5)})
        assert r.status_code == 502 and r.headers["nvcf-status"] == "errored"
        assert r.json()["detail"] == f"the result is larger than {LIMIT} bytes"
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", headers={**no_compat, "Echo-Size": str(LIMIT)})  # at the limit: whole
        assert r.status_code == 200 and len(r.content) == LIMIT
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", headers={**AUTH, "Echo-Size": str(LIMIT + 1)})  # compat: large
        assert r.status_code == 302 and r.headers["location"]


async def test_a_client_gone_after_the_202_before_its_body_fails_the_job(env, echo_up):
    env.publish([route(echo_up.port, inference_url="/infer")])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.http_port)
    writer.write(
        b"POST /v2/nvcf/pexec/functions/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"NVCF-POLL-SECONDS: 1\r\nContent-Length: 100000\r\n\r\n" % (FID.encode(), KEY.encode()) + b"x" * 10
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 202 ")
    rid = next(line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"nvcf-reqid"))
    writer.close()  # with 99,990 body bytes never sent
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(f"{env.url}/v2/nvcf/pexec/status/{rid.decode()}", headers={**AUTH, "NVCF-POLL-SECONDS": "5"})
    assert r.status_code == 502 and "went away" in r.json()["detail"]
