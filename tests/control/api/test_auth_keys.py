"""Authentication, scopes, function-limited keys, and the /v1/keys routes."""

from __future__ import annotations

from fngate.control import records
from fngate.proxy.routing import key_digest

from .conftest import ADMIN_KEY, EXAMPLE_FUNCTION


async def test_missing_malformed_and_unknown_keys_are_401(api):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer nvapi-unknown"}):
        resp = await api.client.get("/v2/nvcf/functions", headers=headers)
        assert resp.status == 401 and resp.content_type == "application/problem+json"
        body = await resp.json(content_type=None)
        assert body["type"] == "urn:nv-boot:problem-details:unauthorized" and body["title"] == "Unauthorized"


async def test_admin_key_is_recorded_hashed_with_every_scope(api):
    rec = await api.store.get(records.KEYS, "admin")
    assert rec.value["digest"] == key_digest(ADMIN_KEY)
    assert ADMIN_KEY not in str(rec.value)
    assert {"invoke_function", "deploy_function", "manage_keys"} <= set(rec.value["scopes"])


async def test_create_list_get_revoke_key(api):
    created = await api.call("POST", "/v1/keys", {"scopes": ["list_functions"], "description": "ci"})
    plain, meta = created["value"], created["key"]
    assert plain.startswith("nvapi-") and "digest" not in meta and meta["scopes"] == ["list_functions"]
    stored = await api.store.get(records.KEYS, meta["keyId"])
    assert stored.value["digest"] == key_digest(plain) and plain not in str(stored.value)
    listed = (await api.call("GET", "/v1/keys"))["keys"]
    assert {k["keyId"] for k in listed} == {"admin", meta["keyId"]}
    assert plain not in str(listed) and all("digest" not in k for k in listed)
    assert (await api.call("GET", f"/v1/keys/{meta['keyId']}"))["key"] == meta
    assert (await api.call("GET", "/v2/nvcf/functions", key=plain))["functions"] == []
    await api.call("DELETE", f"/v1/keys/{meta['keyId']}", status=204)
    await api.problem("GET", "/v2/nvcf/functions", key=plain, status=401)
    await api.problem("DELETE", f"/v1/keys/{meta['keyId']}", status=404)
    await api.problem("GET", f"/v1/keys/{meta['keyId']}", status=404)
    await api.problem("DELETE", "/v1/keys/admin", status=400)


async def test_key_validation(api):
    for body, field in (
        ({}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["fly"]}, "scopes"),
        ({"scopes": ["list_functions"], "functionIds": []}, "functionIds"),
        ({"scopes": ["list_functions"], "expiresAt": "yesterday"}, "expiresAt"),
        ({"scopes": ["list_functions"], "expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
        ({"scopes": ["list_functions"], "ttlSeconds": 0}, "ttlSeconds"),
    ):
        p = await api.problem("POST", "/v1/keys", body, status=400)
        assert field in p["detail"]
    assert [r.key for r in await api.store.list(records.KEYS)] == ["admin"]


async def test_expired_key_is_401(api):
    created = await api.call("POST", "/v1/keys", {"scopes": ["list_functions"], "ttlSeconds": 60})
    rec = await api.store.get(records.KEYS, created["key"]["keyId"])
    await api.store.put(records.KEYS, rec.key, {**rec.value, "expiresAt": "2001-01-01T00:00:00Z"})
    p = await api.problem("GET", "/v2/nvcf/functions", key=created["value"], status=401)
    assert "expired" in p["detail"]


async def test_missing_scope_is_403_and_changes_nothing(api):
    reader = await api.key("list_functions")
    p = await api.problem("POST", "/v2/nvcf/functions", EXAMPLE_FUNCTION, key=reader, status=403)
    assert "register_function" in p["detail"] and p["type"].endswith(":forbidden")
    assert await api.store.list(records.FUNCTIONS) == []
    fn = await api.create_function()
    for method, path, body in (
        ("PUT", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}", {"tags": ["x"]}),
        ("DELETE", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}", None),
        ("POST", f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}", {"deploymentSpecifications": []}),
        ("GET", f"/v2/nvcf/queues/functions/{fn['id']}", None),
        ("GET", "/v2/nvcf/supportedGpus", None),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", {"scopes": ["list_functions"]}),
    ):
        await api.problem(method, path, body, key=reader, status=403)
    assert (await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"))["function"] == fn


async def test_function_limited_key(api):
    mine = await api.create_function(name="mine")
    other = await api.create_function(name="other")
    key = await api.key("list_functions", "deploy_function", "queue_details", functionIds=[mine["id"]])
    assert [f["id"] for f in (await api.call("GET", "/v2/nvcf/functions", key=key))["functions"]] == [mine["id"]]
    assert (await api.call("GET", "/v2/nvcf/functions/ids", key=key))["functionIds"] == [mine["id"]]
    await api.call("GET", f"/v2/nvcf/functions/{mine['id']}/versions/{mine['versionId']}", key=key)
    p = await api.problem("GET", f"/v2/nvcf/functions/{other['id']}/versions/{other['versionId']}", key=key, status=403)
    assert "Missing resource entry" in p["detail"]
    dep = await api.deploy(other)
    await api.problem("GET", f"/v2/nvcf/deployments/{dep['deploymentId']}", key=key, status=403)
    await api.problem(
        "POST",
        f"/v2/nvcf/deployments/functions/{other['id']}/versions/{other['versionId']}",
        {"deploymentSpecifications": []},
        key=key,
        status=403,
    )
