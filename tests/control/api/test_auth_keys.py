"""Authentication, scopes, resource-limited keys, and the escalation rule of /v1/keys."""

from __future__ import annotations

from fngate.control import records
from fngate.proxy.routing.snapshot import key_digest
from tests.support.keys import WILDCARDS, function_resource, key_body, key_headers, policy

from .conftest import ADMIN_KEY, EXAMPLE_FUNCTION


async def test_missing_and_malformed_authorization_is_401_unknown_api_key_403(api):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer some-jwt"}):
        resp = await api.client.get("/v2/nvcf/functions", headers=headers)
        assert resp.status == 401 and resp.content_type == "application/problem+json"
        body = await resp.json(content_type=None)
        assert body["type"] == "urn:nv-boot:problem-details:unauthorized" and body["title"] == "Unauthorized"
    # a bearer that looks like an API key is evaluated and "not allowed" (spec 3.6)
    p = await api.problem("GET", "/v2/nvcf/functions", key="nvapi-unknown", status=403)
    assert p["detail"] == "Authorization failed"


async def test_admin_key_is_recorded_hashed_with_every_scope(api):
    rec = await api.store.get(records.KEYS, "admin")
    assert rec.value["digest"] == key_digest(ADMIN_KEY)
    assert ADMIN_KEY not in str(rec.value).replace(ADMIN_KEY[-3:], "")
    scopes = set(rec.value["authorizations"]["policies"][0]["scopes"])
    assert {"invoke_function", "deploy_function", "manage_keys", "authorize_clients"} <= scopes


async def test_expired_key_is_refused(api):
    plain = await api.key("list_functions")
    rec = next(r for r in await api.store.list(records.KEYS) if r.value["digest"] == key_digest(plain))
    await api.store.put(records.KEYS, rec.key, {**rec.value, "expires_at": "2001-01-01T00:00:00Z"})
    p = await api.problem("GET", "/v2/nvcf/functions", key=plain, status=403)
    assert p["detail"] == "Authorization failed"


async def test_key_without_a_policy_for_nvcf_is_refused(api):
    body = key_body(["list_functions"])
    body["authorizations"]["policies"][0]["aud"] = "some-other-service"
    resp = await api.client.post("/v1/keys", json=body, headers={**api.auth(), **key_headers()})
    plain = (await resp.json())["value"]
    p = await api.problem("GET", "/v2/nvcf/functions", key=plain, status=403)
    assert p["detail"] == "Authorization failed"


async def test_missing_scope_is_403_and_changes_nothing(api):
    reader = await api.key("list_functions")
    p = await api.problem("POST", "/v2/nvcf/functions", EXAMPLE_FUNCTION, key=reader, status=403)
    assert "register_function" in p["detail"] and p["type"].endswith(":forbidden")
    assert await api.store.list(records.FUNCTIONS) == []
    fn = await api.create_function()
    fv = f"{fn['id']}/versions/{fn['versionId']}"
    # scope -> endpoint table (spec 3.7): one route per scope, refused without it
    for method, path, body in (
        ("POST", f"/v2/nvcf/functions/{fn['id']}/versions", EXAMPLE_FUNCTION),
        ("PUT", f"/v2/nvcf/functions/{fv}", {"tags": ["x"]}),
        ("PUT", f"/v2/nvcf/metadata/functions/{fv}", {"tags": ["x"]}),
        ("DELETE", f"/v2/nvcf/functions/{fv}", None),
        ("POST", f"/v2/nvcf/deployments/functions/{fv}", {"deploymentSpecifications": []}),
        ("GET", f"/v2/nvcf/deployments/functions/{fv}", None),
        ("GET", f"/v2/nvcf/queues/functions/{fn['id']}", None),
        ("GET", "/v2/nvcf/queues/req-1/position", None),
        ("GET", "/v2/nvcf/supportedGpus", None),
        ("GET", "/v2/nvcf/clusterGroups", None),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", key_body(["list_functions"])),
    ):
        await api.problem(method, path, body, key=reader, status=403, headers=key_headers())
    assert (await api.call("GET", f"/v2/nvcf/functions/{fv}"))["function"] == fn


async def test_function_and_version_resources_limit_what_a_key_reaches(api):
    mine = await api.create_function(name="mine")
    other = await api.create_function(name="other")
    key = await api.key("list_functions", "deploy_function", "queue_details", resources=[function_resource(mine["id"])])
    assert [f["id"] for f in (await api.call("GET", "/v2/nvcf/functions", key=key))["functions"]] == [mine["id"]]
    assert (await api.call("GET", "/v2/nvcf/functions/ids", key=key))["functionIds"] == [mine["id"]]
    await api.call("GET", f"/v2/nvcf/functions/{mine['id']}/versions/{mine['versionId']}", key=key)
    p = await api.problem("GET", f"/v2/nvcf/functions/{other['id']}/versions/{other['versionId']}", key=key, status=403)
    assert p["detail"] == f"Function id '{other['id']}', version '{other['versionId']}': Missing resource entry in ApiKey for the function"
    p = await api.problem("GET", f"/v2/nvcf/functions/{other['id']}/versions", key=key, status=403)
    assert p["detail"] == f"Function '{other['id']}':  Missing resource entry in ApiKey for the function"
    dep = await api.deploy(other)
    await api.problem("GET", f"/v2/nvcf/deployments/{dep['deploymentId']}", key=key, status=403)
    await api.problem(
        "POST",
        f"/v2/nvcf/deployments/functions/{other['id']}/versions/{other['versionId']}",
        {"deploymentSpecifications": []},
        key=key,
        status=403,
    )
    # one version only: that version, not the function as a whole
    pinned = await api.key("list_functions", resources=[function_resource(mine["id"], mine["versionId"])])
    await api.call("GET", f"/v2/nvcf/functions/{mine['id']}/versions/{mine['versionId']}", key=pinned)
    assert [f["versionId"] for f in (await api.call("GET", f"/v2/nvcf/functions/{mine['id']}/versions", key=pinned))["functions"]] == [
        mine["versionId"]
    ]
    # no resources at all: nothing
    bare = await api.key("list_functions", resources=[])
    assert (await api.call("GET", "/v2/nvcf/functions", key=bare))["functions"] == []


async def test_manage_keys_cannot_mint_a_wider_key(api):
    """The escalation finding: a key with manage_keys minted deploy_function keys."""
    fn = await api.create_function()
    manager = await api.key("manage_keys", "list_functions", resources=[function_resource(fn["id"])])
    headers = {**api.auth(manager), **key_headers("eve@test")}
    attempts = [
        key_body(["deploy_function"]),  # a scope it lacks
        key_body(["delete_function", "list_functions"]),
        key_body(["list_functions"], WILDCARDS),  # resources it lacks
        key_body(["list_functions"], [{"id": "*", "type": "account-functions"}]),
        key_body(["list_functions"], [function_resource("0b6fd3c9-5b30-4b8a-8f0e-1f1f1f1f1f1f")]),  # a function it does not reach
    ]
    hidden = key_body(["list_functions"], [function_resource(fn["id"])])  # a second policy with another audience
    hidden["authorizations"]["policies"].append({**policy(["deploy_function"]), "aud": "another-service"})
    attempts.append(hidden)
    before = len(await api.store.list(records.KEYS))
    for body in attempts:
        resp = await api.client.post("/v1/keys", json=body, headers=headers)
        problem = await resp.json(content_type=None)
        assert resp.status == 403, problem
        assert "exceeds the calling key" in problem["detail"]
    assert len(await api.store.list(records.KEYS)) == before  # nothing was created
    # within its own authority it may create keys (narrower or equal)
    ok = await api.client.post("/v1/keys", json=key_body(["list_functions"], [function_resource(fn["id"])]), headers=headers)
    assert ok.status == 200
    narrower = (await ok.json())["id"]
    # and cannot widen one afterwards
    resp = await api.client.put(
        f"/v1/keys/{narrower}/authorizations", json={"authorizations": key_body(["deploy_function"])["authorizations"]}, headers=headers
    )
    assert resp.status == 403
    # nor change or delete a key wider than itself
    wide = await api.client.post("/v1/keys", json=key_body(["deploy_function"]), headers={**api.auth(), **key_headers("eve@test")})
    wide_id = (await wide.json())["id"]
    resp = await api.client.delete(f"/v1/keys/{wide_id}", headers=headers)
    assert resp.status == 403
    resp = await api.client.put(
        f"/v1/keys/{wide_id}/authorizations",
        json={"authorizations": key_body(["list_functions"], [function_resource(fn["id"])])["authorizations"]},
        headers=headers,
    )
    assert resp.status == 403
    assert "deploy_function" in str((await api.store.get(records.KEYS, wide_id)).value["authorizations"])


async def test_invocation_key_from_the_docs_reaches_every_function_of_its_account(api):
    fn = await api.create_function()
    key = await api.key(*key_body()["authorizations"]["policies"][0]["scopes"], resources=WILDCARDS)
    assert [f["id"] for f in (await api.call("GET", "/v2/nvcf/functions", key=key))["functions"]] == [fn["id"]]
    await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}", key=key)


async def test_creating_functions_takes_the_account_wildcard(api):
    fn = await api.create_function()
    pinned = await api.key("register_function", resources=[function_resource(fn["id"], fn["versionId"])])
    p = await api.problem("POST", "/v2/nvcf/functions", EXAMPLE_FUNCTION, key=pinned, status=403)
    assert p["detail"] == "Forbidden to create function"
    p = await api.problem("POST", f"/v2/nvcf/functions/{fn['id']}/versions", EXAMPLE_FUNCTION, key=pinned, status=403)
    assert p["detail"] == f"Function id '{fn['id']}': Forbidden to create function version"
    whole = await api.key("register_function", resources=[function_resource(fn["id"])])
    await api.call("POST", f"/v2/nvcf/functions/{fn['id']}/versions", EXAMPLE_FUNCTION, key=whole)
    await api.call("POST", "/v2/nvcf/functions", EXAMPLE_FUNCTION, key=await api.key("register_function"))
