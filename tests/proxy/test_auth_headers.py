"""Authentication against the published key digests, and the header contract towards
the instance (spec 5.2, 9) and back to the client (5.4)."""

from __future__ import annotations

import time

import httpx

from fngate.proxy.routing.snapshot import KeyGrant, key_digest

from .conftest import FID, KEY, OTHER_KEY, VID, route


async def test_missing_authorization_is_plain_text_401(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/", headers={"Host": env.host()})
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text == "Header of type `authorization` was missing"
        r = await c.get(f"{env.url}/", headers={"Host": env.host(), "Authorization": "Basic abc"})
        assert r.status_code == 401 and r.headers["content-type"].startswith("text/plain")


async def test_invalid_key_is_problem_json_401_and_scope_403(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/", headers=env.headers(key="nvapi-wrong"))
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401
        r = await c.get(f"{env.url}/", headers=env.headers(key=OTHER_KEY))  # key limited to another function
        assert r.status_code == 403 and r.json()["title"] == "Forbidden"


async def test_expired_and_unscoped_keys(env, echo_up):
    keys = [
        (key_digest("expired"), KeyGrant("e", frozenset({"invoke_function"}), None, expires_at=time.time() - 1)),
        (key_digest("manage-only"), KeyGrant("m", frozenset({"list_functions"}), None)),
        (key_digest(KEY), KeyGrant("k", frozenset({"invoke_function"}), frozenset({FID}))),
    ]
    env.publish([route(echo_up.port)], keys)
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{env.url}/", headers=env.headers(key="expired"))).status_code == 401
        assert (await c.get(f"{env.url}/", headers=env.headers(key="manage-only"))).status_code == 403
        assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 200
        # a key revoked in a newer snapshot stops working at once
        env.publish([route(echo_up.port)], keys[:2])
        assert (await c.get(f"{env.url}/", headers=env.headers())).status_code == 401


async def test_headers_to_the_instance(env, echo_up):
    env.publish([route(echo_up.port)])
    sent = env.headers(
        **{
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Keep-Alive": "timeout=5",
            "NVCF-FUNCTION-ID": "spoofed",
            "NVCF-POLL-SECONDS": "30",
            "Proxy-Authorization": "secret",
        }
    )
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{env.url}/infer", json={"a": 1}, headers=sent)
    got = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert "authorization" not in got and "proxy-authorization" not in got
    assert "x-hop" not in got and "keep-alive" not in got
    assert got["x-custom"] == "kept"
    assert got["nvcf-function-id"] == FID  # the client cannot spoof platform headers
    assert got["nvcf-function-version-id"] == VID
    assert got["nvcf-function-name"] == "echo-fn"
    assert got["nvcf-instancetype"] == "NCP.GPU.TEST_1x"
    assert got["nvcf-sub"] == "alice"
    assert got["nvcf-reqid"] == r.headers["nvcf-reqid"]
    assert got["nvcf-asset-dir"] == f"{env.gw.config.asset_dir}/{got['nvcf-reqid']}"  # (NVCF's /var/inf/inputAssets by default)
    assert got["nvcf-large-output-dir"] == f"{env.gw.config.output_dir}/{got['nvcf-reqid']}"
    assert got["nvcf-max-response-size-bytes"] == "5242880"
    assert got["nvcf-invocation-region"] == "local"
    assert 28 <= int(got["nvcf-poll-seconds"]) <= 30  # the time left of the 30 s window
    assert got["content-type"] == "application/json"
    # no Content-Type from the client: the instance gets application/json (spec 5.2)
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/", headers=env.headers())
    got = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert got["content-type"] == "application/json"


async def test_response_headers_and_status_pass_through(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{env.url}/?status=503", headers=env.headers())
        assert r.status_code == 503 and r.headers["nvcf-status"] == "errored"
        assert r.json()["method"] == "GET"  # the instance's body, unchanged
        r = await c.get(f"{env.url}/?status=202", headers=env.headers())
        assert r.headers["nvcf-status"] == "in-progress"
        r = await c.head(f"{env.url}/?size=1000", headers=env.headers())
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "1000"
        r = await c.get(f"{env.url}/?status=204", headers=env.headers())
        assert r.status_code == 204 and r.content == b""


async def test_poll_seconds_validation(env, echo_up):
    env.publish([route(echo_up.port)])
    async with httpx.AsyncClient() as c:
        for bad in ("3601", "abc", "-1"):
            r = await c.get(f"{env.url}/", headers=env.headers(**{"NVCF-POLL-SECONDS": bad}))
            assert r.status_code == 400 and r.json() == {"status": 400, "title": "Bad Request", "detail": "failed to parse poll duration"}
        r = await c.get(f"{env.url}/", headers=env.headers(**{"NVCF-POLL-SECONDS": "0"}))
        got = {k.lower(): v for k, v in r.json()["headers"].items()}
        assert r.status_code == 200 and got["nvcf-poll-seconds"] == "1"
