"""PUT /v2/nvcf/secrets/** and includeSecrets (spec part 2, section 4): NVCF's bodies,
its validation, merge and state rules, and its status codes."""

from __future__ import annotations

import pytest

from fngate.control import records
from tests.support.keys import function_resource

from .conftest import EXAMPLE_FUNCTION

UNKNOWN = "00000000-0000-4000-8000-000000000000"
TELEMETRY = "3f1e2d4c-5b6a-4789-9abc-def012345678"
# the spec's example body (4.1)
EXAMPLE_SECRETS = {"secrets": [{"name": "HF_TOKEN", "value": "hf_xxx"}, {"name": "db.config", "value": {"host": "db", "port": 5432}}]}


def secrets_path(fn: dict) -> str:
    return f"/v2/nvcf/secrets/functions/{fn['id']}/versions/{fn['versionId']}"


def fn_path(fn: dict) -> str:
    return f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"


async def stored(api, fn: dict) -> dict | None:
    rec = await api.store.get(records.SECRETS, records.version_key(fn["id"], fn["versionId"]))
    return None if rec is None else rec.value["secrets"]


async def plain_function(api) -> dict:
    body = {k: v for k, v in EXAMPLE_FUNCTION.items() if k != "secrets"}
    return await api.create_function(body)


async def test_put_example_body_is_204_and_get_shows_names_only(api):
    fn = await plain_function(api)
    resp = await api.client.put(secrets_path(fn), json=EXAMPLE_SECRETS, headers=api.auth())
    assert resp.status == 204 and await resp.read() == b""
    assert await stored(api, fn) == {"HF_TOKEN": "hf_xxx", "db.config": {"host": "db", "port": 5432}}
    got = (await api.call("GET", fn_path(fn)))["function"]
    assert got["secrets"] == ["HF_TOKEN", "db.config"]
    assert "hf_xxx" not in str(got)


async def test_put_merges_new_value_wins_nothing_removed_and_works_once_deployed(api):
    fn = await api.create_function()  # created with api-key=s3cret
    await api.deploy(fn)  # ACTIVE (minInstances 0)
    await api.call(
        "PUT", secrets_path(fn), {"secrets": [{"name": "api-key", "value": "rotated"}, {"name": "new", "value": "n"}]}, status=204
    )
    assert await stored(api, fn) == {"api-key": "rotated", "new": "n"}
    assert (await api.call("GET", fn_path(fn)))["function"]["secrets"] == ["api-key", "new"]


async def test_first_secrets_only_while_inactive(api):
    fn = await plain_function(api)
    await api.deploy(fn)
    p = await api.problem("PUT", secrets_path(fn), EXAMPLE_SECRETS, status=400)
    assert p["detail"] == f"Function id '{fn['id']}', version '{fn['versionId']}': Add secrets only when the function is 'INACTIVE'"
    assert await stored(api, fn) is None


@pytest.mark.parametrize(
    "body,detail",
    [
        ({"secrets": []}, "Function id '{fid}', version '{vid}': Missing secrets in the payload"),
        ({}, "Function id '{fid}', version '{vid}': Missing secrets in the payload"),
        (
            {"secrets": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
            "Function id '{fid}', version '{vid}': Duplicate secrets keys in the payload",
        ),
        ({"secrets": [{"name": "-bad", "value": "v"}]}, "Invalid secret name: Must conform to regex ^[a-z0-9A-Z][a-z0-9A-Z\\_\\.\\-]*$"),
        ({"secrets": [{"name": "n" * 49, "value": "v"}]}, "Invalid secret name: must be 1 - 48 chars long"),
        ({"secrets": [{"name": "A", "value": "   "}]}, "Invalid secret value specified"),
        ({"secrets": [{"name": "A", "value": "v" * 32769}]}, "Invalid secret value specified"),
        ({"secrets": [{"name": "A", "value": None}]}, "Invalid secret value specified"),
        ({"secrets": [{"name": "A", "value": {"k": "v" * 32768}}]}, "Invalid secret value specified"),
    ],
)
async def test_validation_errors_are_400_and_store_nothing(api, body, detail):
    fn = await plain_function(api)
    p = await api.problem("PUT", secrets_path(fn), body, status=400)
    assert detail.format(fid=fn["id"], vid=fn["versionId"]) in p["detail"]
    assert await stored(api, fn) is None


async def test_boundaries_that_pass(api):
    fn = await plain_function(api)
    body = {"secrets": [{"name": "n" * 48, "value": "v" * 32768}, {"name": "a.b-c_d", "value": {"nested": {"x": 1}}}]}
    await api.call("PUT", secrets_path(fn), body, status=204)


async def test_unknown_version_404_bad_id_400_no_scope_403_other_function_403(api):
    fn = await plain_function(api)
    await api.problem("PUT", f"/v2/nvcf/secrets/functions/{fn['id']}/versions/{UNKNOWN}", EXAMPLE_SECRETS, status=404)
    p = await api.problem("PUT", f"/v2/nvcf/secrets/functions/{fn['id']}/versions/nope", EXAMPLE_SECRETS, status=400)
    assert p["detail"] == "Failed to convert 'functionVersionId' with value: 'nope'"
    await api.problem("PUT", secrets_path(fn), EXAMPLE_SECRETS, status=401, key=None)
    no_scope = await api.key("list_functions")
    await api.problem("PUT", secrets_path(fn), EXAMPLE_SECRETS, status=403, key=no_scope)
    other = await plain_function(api)
    scoped = await api.key("update_secrets", resources=[function_resource(other["id"])])
    p = await api.problem("PUT", secrets_path(fn), EXAMPLE_SECRETS, status=403, key=scoped)
    assert p["detail"] == f"Function id '{fn['id']}', version '{fn['versionId']}': Forbidden to update secrets for this function"
    await api.call("PUT", secrets_path(other), EXAMPLE_SECRETS, key=scoped, status=204)
    assert await stored(api, fn) is None


async def test_a_body_that_is_not_json_is_415(api):
    fn = await plain_function(api)
    resp = await api.client.put(secrets_path(fn), data=b'{"secrets":[]}', headers={**api.auth(), "Content-Type": "text/plain"})
    assert resp.status == 415 and resp.content_type == "application/problem+json"
    assert (await resp.json(content_type=None))["detail"] == "Content-Type 'text/plain' is not supported."


async def test_include_secrets_as_nvcf_applies_it(api):
    fn = await api.create_function()
    path = fn_path(fn)
    assert (await api.call("GET", path))["function"]["secrets"] == ["api-key"]  # default true
    for word in ("true", "TRUE", "yes", "on", "1"):
        assert (await api.call("GET", f"{path}?includeSecrets={word}"))["function"]["secrets"] == ["api-key"]
    for word in ("false", "no", "off", "0"):
        assert "secrets" not in (await api.call("GET", f"{path}?includeSecrets={word}"))["function"]
    p = await api.problem("GET", f"{path}?includeSecrets=maybe", status=400)
    assert p["detail"] == "Failed to convert 'includeSecrets' with value: 'maybe'"
    # list_functions (without _details) never sees the names
    lister = await api.key("list_functions")
    assert "secrets" not in (await api.call("GET", path, key=lister))["function"]
    detailer = await api.key("list_functions_details")
    assert (await api.call("GET", path, key=detailer))["function"]["secrets"] == ["api-key"]
    # list endpoints never include secrets
    assert all("secrets" not in f for f in (await api.call("GET", "/v2/nvcf/functions"))["functions"])
    assert all("secrets" not in f for f in (await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions"))["functions"])


async def test_telemetry_secret_put_is_204_and_validated(api):
    path = f"/v2/nvcf/secrets/telemetries/{TELEMETRY}"
    await api.call("PUT", path, {"secret": {"name": "api-key", "value": "dd-xxx"}}, status=204)
    rec = await api.store.get(records.TELEMETRY_SECRETS, TELEMETRY)
    assert rec.value["name"] == "api-key" and rec.value["value"] == "dd-xxx"
    await api.call("PUT", path, {"secret": {"name": "api-key", "value": {"token": "t"}}}, status=204)
    assert (await api.store.get(records.TELEMETRY_SECRETS, TELEMETRY)).value["value"] == {"token": "t"}
    p = await api.problem("PUT", path, {}, status=400)
    assert "secret" in p["detail"]
    p = await api.problem("PUT", path, {"secret": {"name": "_x", "value": "v"}}, status=400)
    assert "Invalid secret name" in p["detail"]
    await api.problem("PUT", "/v2/nvcf/secrets/telemetries/not-a-uuid", {"secret": {"name": "a", "value": "v"}}, status=400)
    await api.problem("PUT", path, {"secret": {"name": "a", "value": "v"}}, status=403, key=await api.key("list_functions"))


async def test_an_exact_repeat_is_one_secret_not_a_duplicate(api):
    fn = await plain_function(api)
    body = {"secrets": [{"name": "A", "value": {"x": 1, "y": 2}}, {"name": "A", "value": {"y": 2, "x": 1}}]}
    await api.call("PUT", secrets_path(fn), body, status=204)
    assert await stored(api, fn) == {"A": {"x": 1, "y": 2}}
