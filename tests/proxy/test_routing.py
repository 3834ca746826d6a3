"""Routing by Host, version pinning, function-id headers, and the state rules."""

from __future__ import annotations

import httpx
import pytest

from .conftest import FID, KEY, VID, VID2, route


async def test_host_routing_reaches_the_instance(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{env.url}/some/path?x=1&y=2", content=b"hello", headers=env.headers())
    assert r.status_code == 200
    doc = r.json()
    assert doc["method"] == "POST" and doc["path"] == "/some/path" and doc["query"] == "x=1&y=2"
    assert doc["bodySize"] == 5
    assert r.headers["nvcf-status"] == "fulfilled"
    assert doc["headers"]["NVCF-REQID"] == r.headers["nvcf-reqid"]
    assert doc["headers"]["NVCF-FUNCTION-ID"] == FID
    assert doc["headers"]["NVCF-FUNCTION-VERSION-ID"] == VID


async def test_version_pinning_and_function_id_headers(env, echo_up, sse_up):
    env.publish([route(echo_up.port), route(sse_up.port, vid=VID2)])
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/v1/x", headers=env.headers(vid=VID))
        assert r.json()["headers"]["NVCF-FUNCTION-VERSION-ID"] == VID
        # headers take precedence over Host
        r = await c.get(
            f"{env.url}/health",
            headers={"Host": "unrelated.example.com", "Authorization": f"Bearer {KEY}", "function-id": FID, "function-version-id": VID2},
        )
        assert r.status_code == 200 and r.json() == {"status": "ok"}  # the sse sample's health
        r = await c.get(f"{env.url}/stats", headers={"Authorization": f"Bearer {KEY}", "function-id": FID, "function-version-id": VID})
        assert "started" in r.json()


async def test_random_version_without_pin(env, echo_up):
    env.publish([route(echo_up.port), route(echo_up.port, vid=VID2)])
    seen = set()
    async with httpx.AsyncClient() as c:
        for _ in range(30):
            r = await c.get(f"{env.url}/", headers=env.headers())
            seen.add(r.json()["headers"]["NVCF-FUNCTION-VERSION-ID"])
    assert seen == {VID, VID2}


@pytest.mark.parametrize("status,expected", [("DEGRADED", 400), ("DEPLOYING", 404), ("INACTIVE", 404), ("ERROR", 404), ("DEGRADING", 200)])
async def test_state_rules(env, echo_up, status, expected):
    env.publish([route(echo_up.port, status=status)])
    async with httpx.AsyncClient() as c:
        pinned = await c.get(f"{env.url}/", headers=env.headers(vid=VID))
        unpinned = await c.get(f"{env.url}/", headers=env.headers())
    assert pinned.status_code == expected and unpinned.status_code == expected
    if expected != 200:
        assert pinned.headers["content-type"] == "application/problem+json"
        body = pinned.json()
        assert body["status"] == expected and body["title"] and body["detail"]
        assert pinned.headers["nvcf-status"] == "errored"


async def test_unknown_function_and_host(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/", headers=env.headers(fid="00000000-0000-0000-0000-00000000abcd"))
        assert r.status_code == 404
        r = await c.get(f"{env.url}/", headers={"Host": "example.com", "Authorization": f"Bearer {KEY}"})
        assert r.status_code == 404 and r.json()["status"] == 404


async def test_instance_connections_are_kept_alive_and_reused(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        for i in range(10):
            r = await c.post(f"{env.url}/?n={i}", content=b"x" * i, headers=env.headers())
            assert r.status_code == 200
    assert env.gw.pool.opened == 1  # one upstream connection served all ten requests


async def test_host_and_ids_match_case_insensitively(env, echo_up):
    """Attack 10 of issue 13: host names are case-insensitive (RFC 9110 4.2.3), and so
    are the UUIDs in them and in the function-id header."""
    env.publish([route(echo_up.port)])
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient() as c:
        for host in (
            f"{FID}.Invocation.Localhost",
            f"{FID.upper()}.INVOCATION.EXAMPLE.COM:8000",
            f"{VID.upper()}.{FID.upper()}.Invocation.example.com",
        ):
            r = await c.get(f"{env.url}/x", headers={"Host": host, **auth})
            assert r.status_code == 200, host
            assert r.json()["headers"]["NVCF-FUNCTION-ID"] == FID
        r = await c.get(f"{env.url}/x", headers={"function-id": FID.upper(), "function-version-id": VID.upper(), **auth})
        assert r.status_code == 200 and r.json()["headers"]["NVCF-FUNCTION-VERSION-ID"] == VID


@pytest.mark.parametrize("http2", [False, True])
async def test_an_empty_version_header_names_no_version_and_the_key_is_still_checked(env, echo_up, http2):
    """`function-version-id:` with an empty value is no pin (HTTP now parses the target as
    gRPC did): the key's resource entries are checked against the whole function. Before,
    HTTP took the empty value for a version, found no route to check the key against, and
    let a key restricted to another function invoke this one."""
    from .conftest import OTHER_KEY  # a key whose only resource entry is another function

    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient(http1=not http2, http2=http2) as c:
        refused = await c.get(
            f"{env.url}/x", headers={"Authorization": f"Bearer {OTHER_KEY}", "function-id": FID, "function-version-id": ""}
        )
        allowed = await c.get(f"{env.url}/x", headers={"Authorization": f"Bearer {KEY}", "function-id": FID, "function-version-id": ""})
    assert refused.status_code == 403 and "Missing resource entry" in refused.json()["detail"]
    assert allowed.status_code == 200 and allowed.json()["headers"]["NVCF-FUNCTION-VERSION-ID"] == VID
