"""Rate-limit settings (spec part 2, 2.1 and 0.2): the rateLimit object's rules on
functions, and PUT/DELETE /v2/nvcf/ratelimit/... answering 204."""

from __future__ import annotations

import pytest

from tests.support.keys import function_resource

from .conftest import EXAMPLE_FUNCTION

RULE = (
    "Either global rateLimit, perNcaIdRate, or perUserRate must be non-null, per-ncaid rates ncaids cannot be in "
    "exemptedNcaIds, and exemptedNcaIds can only exist when global rateLimit is provided"
)
# the spec's example object (2.1)
EXAMPLE = {
    "rateLimit": "10-S,500-M",
    "exemptedNcaIds": ["nca-internal"],
    "perNcaIdRate": {"nca-partner": "2-S"},
    "perUserRate": "1-S",
    "syncCheck": False,
}


def rl_path(fn: dict) -> str:
    return f"/v2/nvcf/ratelimit/functions/{fn['id']}/versions/{fn['versionId']}"


def fn_path(fn: dict) -> str:
    return f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"


async def test_example_object_on_create_put_and_the_ratelimit_endpoints(api):
    fn = await api.create_function(rateLimit=EXAMPLE)
    assert fn["rateLimit"] == EXAMPLE
    await api.call("PUT", rl_path(fn), {"rateLimit": {"rateLimit": "5-M"}}, status=204)  # a full replacement
    assert (await api.call("GET", fn_path(fn)))["function"]["rateLimit"] == {"rateLimit": "5-M"}
    await api.call("PUT", fn_path(fn), {"tags": ["t"]})  # leaving the field out keeps it
    assert (await api.call("GET", fn_path(fn)))["function"]["rateLimit"] == {"rateLimit": "5-M"}
    resp = await api.client.delete(rl_path(fn), headers=api.auth())
    assert resp.status == 204 and await resp.read() == b""
    assert "rateLimit" not in (await api.call("GET", fn_path(fn)))["function"]
    await api.call("DELETE", rl_path(fn), status=204)  # clearing nothing is still 204


@pytest.mark.parametrize(
    "rate",
    ["10-S", "10-S,500-M", "10-S, 500-M,  3-H", "1-D", "999999-M"],
)
async def test_rate_strings_nvcf_accepts(api, rate):
    fn = await api.create_function()
    await api.call("PUT", rl_path(fn), {"rateLimit": {"rateLimit": rate, "perUserRate": rate, "perNcaIdRate": {"n": rate}}}, status=204)


@pytest.mark.parametrize("rate", ["0-S", "01-S", "10-s", "10-X", "10S", "10-S,5-S", "10-S;5-M", "10-S,", "-S", "", 10])
async def test_rate_strings_nvcf_refuses(api, rate):
    fn = await api.create_function()
    for rl in ({"rateLimit": rate}, {"perUserRate": rate}, {"perNcaIdRate": {"n": rate}}):
        await api.problem("PUT", rl_path(fn), {"rateLimit": rl}, status=400)
        await api.problem("POST", "/v2/nvcf/functions", {**EXAMPLE_FUNCTION, "rateLimit": rl}, status=400)


@pytest.mark.parametrize(
    "rl,message",
    [
        ({}, RULE),
        ({"syncCheck": True}, RULE),
        ({"perUserRate": "1-S", "exemptedNcaIds": ["a"]}, RULE),
        ({"rateLimit": "1-S", "exemptedNcaIds": ["a"], "perNcaIdRate": {"a": "2-S"}}, RULE),
        ({"rateLimit": "1-S", "exemptedNcaIds": [f"n{i}" for i in range(33)]}, "Maximum number of exempted nca id of 32 is exceeded"),
        ({"perNcaIdRate": {f"n{i}": "1-S" for i in range(33)}}, "Maximum number of per nca id config of 32 is exceeded"),
        ({"rateLimit": "1-S", "syncCheck": "yes"}, "syncCheck"),
    ],
)
async def test_object_rules_and_messages(api, rl, message):
    fn = await api.create_function()
    p = await api.problem("PUT", rl_path(fn), {"rateLimit": rl}, status=400)
    assert message in p["detail"]
    assert "rateLimit" not in (await api.call("GET", fn_path(fn)))["function"]


async def test_limits_that_pass_and_exempted_ids_are_a_set(api):
    fn = await api.create_function()
    rl = {"rateLimit": "1-S", "exemptedNcaIds": [f"n{i}" for i in range(32)] + ["n0"], "perNcaIdRate": {f"p{i}": "1-S" for i in range(32)}}
    await api.call("PUT", rl_path(fn), {"rateLimit": rl}, status=204)
    got = (await api.call("GET", fn_path(fn)))["function"]["rateLimit"]
    assert got["exemptedNcaIds"] == [f"n{i}" for i in range(32)]


async def test_errors_of_the_ratelimit_endpoints(api):
    fn = await api.create_function()
    unknown = "00000000-0000-4000-8000-000000000000"
    await api.problem("PUT", f"/v2/nvcf/ratelimit/functions/{fn['id']}/versions/{unknown}", {"rateLimit": {"rateLimit": "1-S"}}, status=404)
    await api.problem("DELETE", f"/v2/nvcf/ratelimit/functions/{unknown}/versions/{unknown}", status=404)
    await api.problem("DELETE", f"/v2/nvcf/ratelimit/functions/{fn['id']}/versions/nope", status=400)
    await api.problem("PUT", rl_path(fn), {}, status=400)
    await api.problem("PUT", rl_path(fn), {"rateLimit": {"rateLimit": "1-S"}}, status=401, key=None)
    await api.problem("PUT", rl_path(fn), {"rateLimit": {"rateLimit": "1-S"}}, status=403, key=await api.key("list_functions"))
    other = await api.create_function(name="other")
    scoped = await api.key("update_function", resources=[function_resource(other["id"])])
    p = await api.problem("DELETE", rl_path(fn), status=403, key=scoped)
    assert p["detail"] == f"Function id '{fn['id']}', version '{fn['versionId']}': Forbidden to update ratelimit for this function"
    await api.call("PUT", rl_path(other), {"rateLimit": {"rateLimit": "1-S"}}, key=scoped, status=204)
