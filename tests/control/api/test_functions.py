"""Functions and versions: create, list, get, update, delete, and their error paths."""

from __future__ import annotations

import pytest

from fngate.control import records

from .conftest import EXAMPLE_FUNCTION

UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def test_create_returns_the_stored_function_inactive_with_defaults(api):
    fn = await api.create_function()
    assert fn["status"] == "INACTIVE"
    assert fn["name"] == "my-model-function" and fn["ncaId"] == "fngate"
    assert fn["health"] == {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT10S", "expectedStatusCode": 200}
    assert fn["functionType"] == "DEFAULT" and fn["apiBodyFormat"] == "CUSTOM"
    assert fn["secrets"] == ["api-key"]  # names only, never values
    assert "s3cret" not in str(fn)
    assert not any(v is None for v in fn.values())
    stored = await api.store.get(records.SECRETS, records.version_key(fn["id"], fn["versionId"]))
    assert stored.value == {"secrets": {"api-key": "s3cret"}}


async def test_grpc_function_gets_a_grpc_health_check_by_default(api):
    fn = await api.create_function({"name": "g", "inferenceUrl": "/grpc", "containerImage": "fngate/grpc-echo"})
    assert fn["health"]["protocol"] == "gRPC" and fn["healthUri"] == "/v2/health/ready"


async def test_list_get_ids_and_versions(api):
    a = await api.create_function()
    a2 = (await api.call("POST", f"/v2/nvcf/functions/{a['id']}/versions", {**EXAMPLE_FUNCTION, "tags": ["v2"]}))["function"]
    b = await api.create_function(name="other")
    assert a2["id"] == a["id"] and a2["versionId"] != a["versionId"]

    listed = (await api.call("GET", "/v2/nvcf/functions"))["functions"]
    assert {(f["id"], f["versionId"]) for f in listed} == {(a["id"], a["versionId"]), (a["id"], a2["versionId"]), (b["id"], b["versionId"])}
    ids = (await api.call("GET", "/v2/nvcf/functions/ids"))["functionIds"]
    assert sorted(ids) == sorted({a["id"], b["id"]})
    versions = (await api.call("GET", f"/v2/nvcf/functions/{a['id']}/versions"))["functions"]
    assert {v["versionId"] for v in versions} == {a["versionId"], a2["versionId"]}
    got = (await api.call("GET", f"/v2/nvcf/functions/{a['id']}/versions/{a['versionId']}"))["function"]
    assert got == a


async def test_visibility_filter(api):
    await api.create_function()
    assert len((await api.call("GET", "/v2/nvcf/functions?visibility=private"))["functions"]) == 1
    assert (await api.call("GET", "/v2/nvcf/functions?visibility=public,authorized"))["functions"] == []
    assert (await api.call("GET", "/v2/nvcf/functions/ids?visibility=public"))["functionIds"] == []
    p = await api.problem("GET", "/v2/nvcf/functions?visibility=secret", status=400)
    assert "visibility" in p["detail"]


async def test_active_instances_come_from_the_instances_kind(api):
    fn = await api.create_function()
    await api.store.put(
        records.INSTANCES,
        records.instance_key(fn["versionId"], "i-1"),
        {
            "instanceId": "i-1",
            "functionId": fn["id"],
            "functionVersionId": fn["versionId"],
            "instanceStatus": "ACTIVE",
            "host": "127.0.0.1",
            "port": 5000,
            "gpuSpecificationId": "g",
        },
    )
    got = (await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"))["function"]
    assert got["activeInstances"] == [
        {"instanceId": "i-1", "functionId": fn["id"], "functionVersionId": fn["versionId"], "instanceStatus": "ACTIVE"}
    ]


async def test_update_changes_only_updatable_fields(api):
    fn = await api.create_function()
    path = f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"
    updated = (await api.call("PUT", path, {"tags": ["x", "y"], "rateLimit": {"rateLimit": "100-S"}}))["function"]
    assert updated["tags"] == ["x", "y"] and updated["rateLimit"] == {"rateLimit": "100-S"}
    assert updated["containerImage"] == fn["containerImage"]
    alias = (await api.call("PUT", f"/v2/nvcf/metadata/functions/{fn['id']}/versions/{fn['versionId']}", {"tags": ["z"]}))["function"]
    assert alias["tags"] == ["z"]
    p = await api.problem("PUT", path, {"containerImage": "other"}, status=400)
    assert "containerImage" in p["detail"]
    p = await api.problem("PUT", path, {}, status=400)
    assert "tags" in p["detail"]
    p = await api.problem("PUT", path, {"rateLimit": {"rateLimit": "fast"}}, status=400)
    assert "rateLimit.rateLimit" in p["detail"]
    p = await api.problem("PUT", path, {"modelUpdates": [{"modelName": "nope", "llmConfig": {"routingMethod": "random"}}]}, status=400)
    assert "Only LLM functions support model config updates" in p["detail"]
    after = (await api.call("GET", path))["function"]
    assert after["tags"] == ["z"]


async def test_model_updates_merge_into_llm_config(api):
    fn = await api.create_function(
        {
            "name": "llm",
            "inferenceUrl": "/",
            "functionType": "LLM",
            "containerImage": "img",
            "models": [{"name": "m", "llmConfig": {"uris": ["/v1/chat/completions"]}}],
        }
    )
    path = f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"
    got = (await api.call("PUT", path, {"modelUpdates": [{"modelName": "m", "llmConfig": {"routingMethod": "random"}}]}))["function"]
    assert got["models"][0]["llmConfig"] == {"uris": ["/v1/chat/completions"], "routingMethod": "random"}


async def test_delete_version_removes_it_and_everything_hanging_off_it(api):
    fn = await api.create_function()
    await api.deploy(fn)
    vid = fn["versionId"]
    key = records.version_key(fn["id"], vid)
    await api.store.put(records.INSTANCES, records.instance_key(vid, "i-1"), {"instanceId": "i-1"})
    await api.store.put(records.SCALE, records.scale_key(vid, "g"), {"replicas": 1})
    path = f"/v2/nvcf/functions/{fn['id']}/versions/{vid}"
    assert await api.call("DELETE", path, status=204) is None
    for kind in (records.FUNCTIONS, records.DEPLOYMENTS, records.SECRETS):
        assert await api.store.get(kind, key) is None
    assert await api.store.list(records.INSTANCES, vid + "/") == []
    assert await api.store.list(records.SCALE, vid + "/") == []
    await api.problem("GET", path, status=404)
    await api.problem("DELETE", path, status=404)


async def test_unknown_function_or_version_is_404(api):
    fn = await api.create_function()
    p = await api.problem("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{UNKNOWN}", status=404)
    assert p["title"] == "Not Found" and UNKNOWN in p["detail"]
    await api.problem("GET", f"/v2/nvcf/functions/{UNKNOWN}/versions", status=404)
    await api.problem("POST", f"/v2/nvcf/functions/{UNKNOWN}/versions", EXAMPLE_FUNCTION, status=404)
    await api.problem("PUT", f"/v2/nvcf/functions/{UNKNOWN}/versions/{fn['versionId']}", {"tags": []}, status=404)


async def test_a_path_id_that_is_not_a_uuid_is_400_not_404(api):
    fn = await api.create_function()
    for method, path, field in (
        ("GET", f"/v2/nvcf/functions/{fn['id']}/versions/nope", "functionVersionId"),
        ("GET", "/v2/nvcf/functions/nope/versions", "functionId"),
        ("DELETE", f"/v2/nvcf/functions/{fn['id']}/versions/1234", "functionVersionId"),
    ):
        p = await api.problem(method, path, status=400)
        assert (
            p["detail"]
            == f"Failed to convert '{field}' with value: '{path.rsplit('/', 1)[-1] if field == 'functionVersionId' else 'nope'}'"
        )
    await api.problem("GET", "/v2/nvcf/functions/nope/versions", status=401, key=None)  # authentication still comes first


BAD_BODIES = [
    ({"inferenceUrl": "/", "containerImage": "i"}, "name"),
    ({**EXAMPLE_FUNCTION, "name": "-bad"}, "name"),
    ({**EXAMPLE_FUNCTION, "name": "x" * 129}, "name"),
    ({**EXAMPLE_FUNCTION, "inferenceUrl": None}, "inferenceUrl"),
    ({**EXAMPLE_FUNCTION, "inferencePort": 70000}, "inferencePort"),
    ({**EXAMPLE_FUNCTION, "inferencePort": "80"}, "inferencePort"),
    ({"name": "n", "inferenceUrl": "/"}, "containerImage"),
    ({**EXAMPLE_FUNCTION, "helmChart": "c", "helmChartServiceName": "s"}, "helmChart"),
    ({"name": "n", "inferenceUrl": "/", "helmChart": "c"}, "helmChartServiceName"),
    ({"name": "n", "inferenceUrl": "/", "helmChart": "c", "helmChartServiceName": "s", "containerArgs": "x"}, "containerArgs"),
    ({**EXAMPLE_FUNCTION, "containerEnvironment": [{"key": "NVCF_X", "value": "1"}]}, "containerEnvironment[0].key"),
    ({**EXAMPLE_FUNCTION, "containerEnvironment": [{"key": "A"}]}, "containerEnvironment[0]"),
    ({**EXAMPLE_FUNCTION, "health": {"protocol": "HTTP", "uri": "/h", "port": 8000}}, "health.timeout"),
    (
        {**EXAMPLE_FUNCTION, "health": {"protocol": "TCP", "uri": "/h", "port": 8000, "timeout": "PT1S", "expectedStatusCode": 200}},
        "health.protocol",
    ),
    (
        {**EXAMPLE_FUNCTION, "health": {"protocol": "HTTP", "uri": "/h", "port": 8000, "timeout": "10s", "expectedStatusCode": 200}},
        "health.timeout",
    ),
    (
        {**EXAMPLE_FUNCTION, "health": {"protocol": "HTTP", "uri": " ", "port": 8000, "timeout": "PT1S", "expectedStatusCode": 200}},
        "health.uri",
    ),
    ({**EXAMPLE_FUNCTION, "apiBodyFormat": "XML"}, "apiBodyFormat"),
    ({**EXAMPLE_FUNCTION, "functionType": "BATCH"}, "functionType"),
    ({**EXAMPLE_FUNCTION, "functionType": "LLM"}, "models"),
    ({**EXAMPLE_FUNCTION, "description": "d" * 257}, "description"),
    ({**EXAMPLE_FUNCTION, "tags": ["bad tag"]}, "tags"),
    ({**EXAMPLE_FUNCTION, "tags": [str(i) for i in range(65)]}, "tags"),
    ({**EXAMPLE_FUNCTION, "secrets": [{"name": "-x", "value": "v"}]}, "secrets[0].name"),
    ({**EXAMPLE_FUNCTION, "secrets": [{"name": "a", "value": ""}]}, "secrets[0].value"),
    ({**EXAMPLE_FUNCTION, "secrets": [{"name": "a", "value": 3}]}, "secrets[0].value"),
    ({**EXAMPLE_FUNCTION, "secrets": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}, "secrets[1].name"),
    ({**EXAMPLE_FUNCTION, "models": [{"name": "m"}]}, "non-LLM function models must specify both 'version' and 'uri'"),
    (
        {**EXAMPLE_FUNCTION, "models": [{"name": "m", "version": "1", "uri": "u"}, {"name": "m", "version": "1", "uri": "u"}]},
        "duplicate model names are not allowed in 'models'",
    ),
    ({**EXAMPLE_FUNCTION, "resources": [{"name": "r"}]}, "resources[0].version"),
    ({**EXAMPLE_FUNCTION, "rateLimit": {}}, "rateLimit"),
    ({**EXAMPLE_FUNCTION, "rateLimit": {"perUserRate": "1-S", "exemptedNcaIds": ["a"]}}, "exemptedNcaIds can only exist"),
    ({**EXAMPLE_FUNCTION, "telemetries": {}}, "telemetries"),
    ({**EXAMPLE_FUNCTION, "llmInvocationConfig": {"priority": {"defaultPriority": -1}}}, "defaultPriority"),
]


@pytest.mark.parametrize("body,field", BAD_BODIES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_BODIES)])
async def test_create_validation_names_the_field_and_stores_nothing(api, body, field):
    p = await api.problem("POST", "/v2/nvcf/functions", body, status=400)
    assert f"'{field}" in p["detail"] or field in p["detail"], p
    assert await api.store.list(records.FUNCTIONS) == []


async def test_malformed_bodies(api):
    for raw, expect in ((b"{not json", "not valid JSON"), (b"[1]", "JSON object"), (b"", "required")):
        resp = await api.client.post("/v2/nvcf/functions", data=raw, headers={**api.auth(), "Content-Type": "application/json"})
        assert resp.status == 400
        assert expect in (await resp.json(content_type=None))["detail"]


async def test_oversized_body_is_413(api):
    resp = await api.client.post("/v2/nvcf/functions", data=b"x" * (65 * 1024), headers={**api.auth(), "Content-Type": "application/json"})
    assert resp.status == 413 and resp.content_type == "application/problem+json"
    assert (await resp.json(content_type=None))["type"] == "urn:nv-boot:problem-details:request-entity-too-large"
    assert await api.store.list(records.FUNCTIONS) == []
