"""Validation as NVCF does it (spec part 2, 11.5 and 11.6): each difference the issue found,
sent as an NVCF user would send it."""

from __future__ import annotations

import time

import pytest

from fngate.control import records
from fngate.proxy.routing.snapshot import LoadReport, VersionLoad

from .conftest import EXAMPLE_FUNCTION, SPEC


def dep_path(fn: dict) -> str:
    return f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"


async def test_enums_accept_any_case_and_store_the_enum_spelling(api):
    health = {"protocol": "grpc", "uri": "/", "port": 8001, "timeout": "PT10S", "expectedStatusCode": 0}
    fn = await api.create_function(apiBodyFormat="custom", functionType="streaming", health=health)
    assert fn["apiBodyFormat"] == "CUSTOM" and fn["functionType"] == "STREAMING"
    assert fn["health"]["protocol"] == "gRPC" and fn["health"]["expectedStatusCode"] == 0
    fn = await api.create_function(health={**health, "protocol": "http", "expectedStatusCode": 204}, functionType="Default")
    assert fn["health"]["protocol"] == "HTTP" and fn["functionType"] == "DEFAULT"
    p = await api.problem("POST", "/v2/nvcf/functions", {**EXAMPLE_FUNCTION, "apiBodyFormat": "xml"}, status=400)
    assert "apiBodyFormat" in p["detail"]


@pytest.mark.parametrize("code", [0, -1, 1, 99, 600, 2**31 - 1])
async def test_expected_status_code_is_any_integer(api, code):
    health = {"protocol": "HTTP", "uri": "/h", "port": 8000, "timeout": "PT1S", "expectedStatusCode": code}
    assert (await api.create_function(health=health))["health"]["expectedStatusCode"] == code


async def test_expected_status_code_must_still_be_an_integer(api):
    health = {"protocol": "HTTP", "uri": "/h", "port": 8000, "timeout": "PT1S", "expectedStatusCode": "200"}
    await api.problem("POST", "/v2/nvcf/functions", {**EXAMPLE_FUNCTION, "health": health}, status=400)


async def test_gpu_instance_type_and_policy_names_accept_any_case(api):
    fn = await api.create_function()
    dep = await api.deploy(fn, {**SPEC, "gpu": "h100", "instanceType": "ncp.gpu.h100_1X"})
    [spec] = dep["deploymentSpecifications"]
    assert spec["gpu"] == "H100" and spec["instanceType"] == "NCP.GPU.H100_1x"  # what the backend knows
    patched = await api.call(
        "PATCH",
        f"/v2/nvcf/deployments/{dep['deploymentId']}/gpu-specifications/{spec['gpuSpecificationId']}",
        {"autoscalingConfigurationPolicy": "platform_configuration"},
    )
    assert patched["gpuSpecification"]["autoscalingConfigurationPolicy"] == "PLATFORM_CONFIGURATION"


async def test_backend_together_with_clusters_is_400(api):
    fn = await api.create_function()
    body = {"deploymentSpecifications": [{**SPEC, "backend": "local", "clusters": ["c1"]}]}
    p = await api.problem("POST", dep_path(fn), body, status=400)
    assert p["detail"] == (
        f"Function id '{fn['id']}', version '{fn['versionId']}': Backend:['local'] and Clusters:['c1'] could not be specified at the same time."
    )
    assert await api.store.get(records.DEPLOYMENTS, records.version_key(fn["id"], fn["versionId"])) is None


async def test_deployment_put_changes_counts_only_and_refuses_other_specs(api):
    fn = await api.create_function()
    dep = await api.deploy(fn)
    [spec] = dep["deploymentSpecifications"]
    gid = spec["gpuSpecificationId"]
    # one spec without its id is matched to the deployed one; only counts change
    body = {"deploymentSpecifications": [{**SPEC, "minInstances": 1, "maxInstances": 3, "maxRequestConcurrency": 4}]}
    [updated] = (await api.call("PUT", dep_path(fn), body))["deployment"]["deploymentSpecifications"]
    assert (updated["gpuSpecificationId"], updated["minInstances"], updated["maxInstances"], updated["maxRequestConcurrency"]) == (
        gid,
        1,
        3,
        4,
    )

    mismatch = (
        f"Function id '{fn['id']}', version ='{fn['versionId']}': GPU / InstanceType specs must match the ones in the original deployment"
    )
    l40s = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1}
    for specs in (
        [{**SPEC, "gpuSpecificationId": gid}, l40s],  # a second spec: SPECS_MISMATCH, never added
        [l40s],  # another gpu/instanceType in place of the deployed one
        [{**SPEC, "gpuSpecificationId": "00000000-0000-4000-8000-000000000000"}],
    ):
        p = await api.problem("PUT", dep_path(fn), {"deploymentSpecifications": specs}, status=400)
        assert p["detail"] == mismatch
    p = await api.problem("PUT", dep_path(fn), {"deploymentSpecifications": [{**SPEC, "backend": "local"}]}, status=400)
    assert (
        p["detail"]
        == f"Function id '{fn['id']}', version '{fn['versionId']}': Backend 'local' field does not match original deployment spec: ''."
    )
    p = await api.problem("PUT", dep_path(fn), {"deploymentSpecifications": [{**SPEC, "clusters": ["c1"]}]}, status=400)
    assert p["detail"] == (
        f"Function id '{fn['id']}', version '{fn['versionId']}': Provided clusters: '[c1]' does not match clusters from original spec: '[]'"
    )
    stored = (await api.call("GET", dep_path(fn)))["deployment"]["deploymentSpecifications"]
    assert [s["gpuSpecificationId"] for s in stored] == [gid] and stored[0]["maxInstances"] == 3


async def test_deployment_put_with_several_specs_needs_their_ids(api):
    fn = await api.create_function()
    l40s = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1}
    dep = await api.deploy(fn, SPEC, l40s)
    a, b = dep["deploymentSpecifications"]
    p = await api.problem("PUT", dep_path(fn), {"deploymentSpecifications": [SPEC, l40s]}, status=400)
    assert p["detail"].endswith("Deployment has multiple GPU specifications. To update deployment use PATCH endpoint.")
    body = {
        "deploymentSpecifications": [
            {"gpuSpecificationId": b["gpuSpecificationId"], "maxInstances": 7},
            {"gpuSpecificationId": a["gpuSpecificationId"]},
        ]
    }
    specs = (await api.call("PUT", dep_path(fn), body))["deployment"]["deploymentSpecifications"]
    assert {s["gpu"]: s["maxInstances"] for s in specs} == {"H100": 2, "L40S": 7}


@pytest.mark.parametrize(
    "word,graceful", [("yes", True), ("on", True), ("1", True), ("TRUE", True), ("no", False), ("off", False), ("0", False)]
)
async def test_graceful_takes_springs_boolean_spellings(api, word, graceful):
    fn = await api.create_function()
    await api.deploy(fn)
    await api.call("DELETE", f"{dep_path(fn)}?graceful={word}")
    dep = await api.store.get(records.DEPLOYMENTS, records.version_key(fn["id"], fn["versionId"]))
    assert (dep is not None and dep.value.get("graceful") is True) is graceful


async def test_graceful_with_another_word_is_400(api):
    fn = await api.create_function()
    await api.deploy(fn)
    p = await api.problem("DELETE", f"{dep_path(fn)}?graceful=maybe", status=400)
    assert p["detail"] == "Failed to convert 'graceful' with value: 'maybe'"


async def test_queue_position_of_a_request_no_longer_queued_is_400_and_of_an_unknown_one_404(api):
    fn = await api.create_function()
    await api.deploy(fn)
    vid = fn["versionId"]
    api.loadboard.update(LoadReport("gw-1", time.time(), {vid: VersionLoad(queue_depth=2, queued_ids=["r1", "r2"])}))
    assert (await api.call("GET", "/v2/nvcf/queues/r1/position"))["positionInQueue"] == 1
    api.loadboard.update(LoadReport("gw-1", time.time(), {vid: VersionLoad(queue_depth=1, in_flight=1, queued_ids=["r2"])}))
    p = await api.problem("GET", "/v2/nvcf/queues/r1/position", status=400)
    assert p["detail"] == "Invocation request message is not in pending or in progress state"
    await api.problem("GET", "/v2/nvcf/queues/never-seen/position", status=404)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", "application/octet-stream"])
async def test_a_body_that_is_not_json_is_415_and_changes_nothing(api, content_type):
    import orjson

    resp = await api.client.post(
        "/v2/nvcf/functions", data=orjson.dumps(EXAMPLE_FUNCTION), headers={**api.auth(), "Content-Type": content_type}
    )
    assert resp.status == 415 and resp.content_type == "application/problem+json"
    assert await api.store.list(records.FUNCTIONS) == []


async def test_json_types_with_a_charset_or_a_suffix_are_read(api):
    import orjson

    for content_type in ("application/json; charset=UTF-8", "application/vnd.nvcf+json"):
        resp = await api.client.post(
            "/v2/nvcf/functions", data=orjson.dumps(EXAMPLE_FUNCTION), headers={**api.auth(), "Content-Type": content_type}
        )
        assert resp.status == 200, await resp.text()


async def test_health_needs_no_key(api):
    resp = await api.client.get("/health")
    assert resp.status == 200 and await resp.json() == {"status": "UP"}
