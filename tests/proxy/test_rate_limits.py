"""Function rate limits (spec part 2, 2.2-2.4): the tiers, the rate strings, and a real
gateway answering NVCF's 429 (plus Retry-After) over HTTP/1.1, HTTP/2, curl and pexec."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx
import orjson
import pytest

from fngate.proxy.errors import RateLimited
from fngate.proxy.routing.rate_limits import RateLimits, RatePolicy, parse_rates
from fngate.proxy.routing.snapshot import KeyGrant, RoutingTable, key_digest

from .conftest import FID, KEY, VID, route

PARTNER_KEY = "nvapi-partner-key"
ALICE_2 = "nvapi-alice-second-key"


def _grant(nca: str = "fngate", subject: str = "alice") -> KeyGrant:
    return KeyGrant("k", frozenset({"invoke_function"}), nca_id=nca, subject=subject)


def _limited(**rate_limit: object) -> str:
    return orjson.dumps(rate_limit).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _passes(limits: RateLimits, r, grant: KeyGrant) -> bool:
    try:
        limits.check(r, grant)
    except RateLimited:
        return False
    return True


def test_rate_strings_units_and_the_stricter_of_a_repeated_unit():
    assert [(r.count, r.period) for r in parse_rates("10-S, 500-M,2-H,1-D")] == [(10, 1), (500, 60), (2, 3600), (1, 86400)]
    assert [r.text for r in parse_rates("4-S,5-S")] == ["4-S"]
    for bad in ("", "0-S", "01-S", "5-W", "5S", "5-s", "-S", "5-S,"):
        with pytest.raises(ValueError):
            parse_rates(bad)
    assert RatePolicy.from_json('{"syncCheck": true}') is None  # nothing to enforce
    assert RatePolicy.from_json('{"rateLimit": "5-W"}') is None  # unreadable: not enforced (fails open, as NVCF)


def test_one_per_second_refills_and_retry_after_says_when():
    clock = Clock()
    limits = RateLimits(clock=clock)
    r = route(1, rate_limit=_limited(rateLimit="2-S"))
    assert _passes(limits, r, _grant()) and _passes(limits, r, _grant())
    with pytest.raises(RateLimited) as err:
        limits.check(r, _grant())
    assert err.value.http_status == 429 and dict(err.value.headers)[b"retry-after"] == b"1"
    clock.now += 0.5  # half a second refills one of two tokens
    assert _passes(limits, r, _grant()) and not _passes(limits, r, _grant())
    day = route(1, rate_limit=_limited(rateLimit="1-D"))
    assert _passes(limits, day, _grant())
    with pytest.raises(RateLimited) as err:
        limits.check(day, _grant())
    assert dict(err.value.headers)[b"retry-after"] == b"86400"


def test_tiers_per_account_exempt_and_per_caller():
    clock = Clock()
    limits = RateLimits(clock=clock)
    policy = _limited(rateLimit="2-M", exemptedNcaIds=["nca-internal"], perNcaIdRate={"nca-partner": "1-M"}, perUserRate="3-M")
    r = route(1, rate_limit=policy)
    # the global rate is per calling account: two accounts, two counters
    assert _passes(limits, r, _grant("nca-a", "u1")) and _passes(limits, r, _grant("nca-a", "u2"))
    assert not _passes(limits, r, _grant("nca-a", "u3"))
    assert _passes(limits, r, _grant("nca-b", "u1"))
    # a per-account rate replaces the global one for that account
    assert _passes(limits, r, _grant("nca-partner", "p")) and not _passes(limits, r, _grant("nca-partner", "p"))
    # an exempt account skips the account tier, not the caller tier
    assert all(_passes(limits, r, _grant("nca-internal", "ops")) for _ in range(3))
    assert not _passes(limits, r, _grant("nca-internal", "ops"))
    assert _passes(limits, r, _grant("nca-internal", "other"))
    # a version has counters of its own
    assert _passes(limits, route(1, vid="v2", rate_limit=policy), _grant("nca-a", "u1"))


def test_a_refused_request_takes_no_token_from_another_tier():
    limits = RateLimits(clock=Clock())
    r = route(1, rate_limit=_limited(rateLimit="3-M", perUserRate="1-M"))
    assert _passes(limits, r, _grant(subject="alice"))
    for _ in range(5):  # alice is refused by her own tier: the account's tokens stay
        assert not _passes(limits, r, _grant(subject="alice"))
    assert _passes(limits, r, _grant(subject="bob")) and _passes(limits, r, _grant(subject="carol"))
    assert not _passes(limits, r, _grant(subject="dave"))


def _keys() -> list[tuple[str, KeyGrant]]:
    return [
        (key_digest(KEY), KeyGrant("k1", frozenset({"invoke_function"}), None, subject="alice")),
        (key_digest(ALICE_2), KeyGrant("k3", frozenset({"invoke_function"}), None, subject="alice")),
        (
            key_digest(PARTNER_KEY),
            KeyGrant("k4", frozenset({"invoke_function"}), None, nca_id="nca-partner", subject="p", any_account=True),
        ),
    ]


async def _metric(env) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as c:  # the admin listener speaks HTTP/1.1
        text = (await c.get(f"http://127.0.0.1:{env.gw.admin_port}/metrics")).text
    return [line for line in text.splitlines() if line.startswith("fngate_rate_limited_total")]


async def test_http1_429_shape_retry_after_and_metric(env, echo_up):
    env.publish([route(echo_up.port, rate_limit=_limited(rateLimit="3-M"))], _keys())
    async with httpx.AsyncClient(timeout=30) as c:
        codes = [(await c.post(f"{env.url}/x", content=b"a", headers=env.headers())).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = await c.post(f"{env.url}/x", content=b"a", headers=env.headers(key=ALICE_2))
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json() == {"status": 429, "title": "Too Many Requests"}
        assert 1 <= int(r.headers["retry-after"]) <= 20  # one token of 3 a minute: 20 s at most
        # another account has its own counter
        assert (await c.post(f"{env.url}/x", content=b"a", headers=env.headers(key=PARTNER_KEY))).status_code == 200
        # no key: 401 before any rate limit, and nothing counted
        assert (await c.post(f"{env.url}/x", content=b"a", headers={"Host": env.host()})).status_code == 401
        assert await _metric(env) == [f'fngate_rate_limited_total{{function_id="{FID}"}} 1']


async def test_no_rate_limit_no_429(env, echo_up):
    env.publish([route(echo_up.port)], _keys())
    async with httpx.AsyncClient(timeout=30) as c:
        codes = {(await c.get(f"{env.url}/x", headers=env.headers())).status_code for _ in range(10)}
    assert codes == {200}


async def test_http2_and_pexec_share_the_counter(env, echo_up):
    env.publish([route(echo_up.port, inference_url="/infer", rate_limit=_limited(perUserRate="2-H"))], _keys())
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as c:
        r = await c.post(f"{env.url}/x", content=b"a", headers=env.headers())
        assert r.http_version == "HTTP/2" and r.status_code == 200
        r = await c.post(
            f"{env.url}/v2/nvcf/pexec/functions/{FID}/versions/{VID}", content=b"a", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert r.status_code == 200
        r = await c.post(f"{env.url}/v2/nvcf/pexec/functions/{FID}", content=b"a", headers={"Authorization": f"Bearer {ALICE_2}"})
        assert r.status_code == 429 and r.json() == {"status": 429, "title": "Too Many Requests"}
        assert 1 <= int(r.headers["retry-after"]) <= 1800
        r = await c.post(f"{env.url}/x", content=b"a", headers=env.headers())
        assert r.status_code == 429 and r.http_version == "HTTP/2"
        assert await _metric(env) == [f'fngate_rate_limited_total{{function_id="{FID}"}} 2']


async def test_a_changed_limit_applies_with_the_next_snapshot(env, echo_up):
    env.publish([route(echo_up.port, rate_limit=_limited(rateLimit="1-H"))], _keys())
    async with httpx.AsyncClient(timeout=30) as c:
        assert (await c.get(f"{env.url}/x", headers=env.headers())).status_code == 200
        assert (await c.get(f"{env.url}/x", headers=env.headers())).status_code == 429
        env.publish([route(echo_up.port)], _keys())  # the limit was deleted
        assert (await c.get(f"{env.url}/x", headers=env.headers())).status_code == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_sees_429_with_retry_after(env, echo_up):
    env.publish([route(echo_up.port, rate_limit=_limited(rateLimit="1-M"))], _keys())
    seen = []
    for flag in ("--http1.1", "--http2-prior-knowledge"):
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "-i", flag, "-H", f"Host: {env.host()}", "-H", f"Authorization: Bearer {KEY}", f"{env.url}/c",
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        seen.append(out.decode("latin-1"))
    assert seen[0].startswith("HTTP/1.1 200")
    assert seen[1].startswith("HTTP/2 429") and "\nretry-after: " in seen[1].lower()


def test_the_limit_travels_in_the_snapshot_whole_and_as_a_delta():
    policy = _limited(rateLimit="10-S,500-M")
    old = RoutingTable.build(1, [route(1)], [])
    new = RoutingTable.build(2, [route(1, rate_limit=policy)], [])
    assert RoutingTable.from_json(new.to_json()).functions[FID][VID].rate_limit == policy
    delta = old.delta_json(new)
    assert orjson.loads(delta)["routes"]  # a changed limit is a changed route
    applied = old.apply_json(delta)
    assert applied is not None and applied.functions[FID][VID].rate_limit == policy
    assert orjson.loads(new.delta_json(RoutingTable.build(3, [route(1, rate_limit=policy)], [])))["routes"] == []
