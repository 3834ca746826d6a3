"""Deployments: create (lifecycle per control.states), get, PUT, PATCH, DELETE (graceful or not)."""

from __future__ import annotations

import pytest

from fngate.control import records
from fngate.control.api.deployments import GRACEFUL_WAIT

from .conftest import SPEC

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def dep_path(fn: dict) -> str:
    return f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"


def fn_path(fn: dict) -> str:
    return f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}"


async def status(api, fn: dict) -> str:
    return (await api.call("GET", fn_path(fn)))["function"]["status"]


async def test_all_min_zero_goes_active_at_once(api):
    fn = await api.create_function()
    dep = await api.deploy(fn)
    assert dep["functionStatus"] == "ACTIVE"
    assert dep["functionId"] == fn["id"] and dep["functionVersionId"] == fn["versionId"]
    assert dep["functionName"] == fn["name"] and dep["ncaId"] == "fngate"
    (spec,) = dep["deploymentSpecifications"]
    assert spec["gpuSpecificationId"] and spec["maxRequestConcurrency"] == 1
    assert {k: spec[k] for k in SPEC} == SPEC
    assert "graceful" not in dep and dep["createdAt"] and dep["lastUpdatedAt"]
    assert await status(api, fn) == "ACTIVE"


async def test_min_above_zero_stays_deploying(api):
    fn = await api.create_function()
    dep = await api.deploy(fn, {**SPEC, "minInstances": 1}, {**SPEC, "gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x"})
    assert dep["functionStatus"] == "DEPLOYING"
    assert len({s["gpuSpecificationId"] for s in dep["deploymentSpecifications"]}) == 2


async def test_get_by_version_and_by_deployment_id(api):
    fn = await api.create_function()
    dep = await api.deploy(fn)
    assert (await api.call("GET", dep_path(fn)))["deployment"] == dep
    assert (await api.call("GET", f"/v2/nvcf/deployments/{dep['deploymentId']}"))["deployment"] == dep
    await api.problem("GET", f"/v2/nvcf/deployments/{UNKNOWN}", status=404)
    p = await api.problem("GET", "/v2/nvcf/deployments/nope", status=400)  # NVCF: a path UUID that does not parse
    assert p["detail"] == "Failed to convert 'deploymentId' with value: 'nope'"
    other = await api.create_function(name="undeployed")
    await api.problem("GET", dep_path(other), status=404)


@pytest.mark.parametrize(
    "state,message",
    [
        ("ACTIVE", "use PATCH endpoint"),
        ("DEPLOYING", "use PATCH endpoint"),
        ("DEGRADING", "use PATCH endpoint"),
        ("DEGRADED", "use PATCH endpoint"),
        ("ERROR", "already has a deployment with errors"),
    ],
)
async def test_deploy_refused_unless_inactive(api, state, message):
    fn = await api.create_function()
    key = records.version_key(fn["id"], fn["versionId"])
    rec = await api.store.get(records.FUNCTIONS, key)
    await api.store.put(records.FUNCTIONS, key, {**rec.value, "status": state})
    p = await api.problem("POST", dep_path(fn), {"deploymentSpecifications": [SPEC]}, status=400)
    assert message in p["detail"]
    assert await api.store.get(records.DEPLOYMENTS, key) is None


BAD_SPECS = [
    ({}, "deploymentSpecifications"),
    ({"deploymentSpecifications": []}, "deploymentSpecifications"),
    ({"deploymentSpecifications": ["x"]}, "deploymentSpecifications[0]"),
    ({"deploymentSpecifications": [{**SPEC, "gpu": "B200"}]}, "deploymentSpecifications[0].gpu"),
    ({"deploymentSpecifications": [{**SPEC, "gpu": ""}]}, "deploymentSpecifications[0].gpu"),
    ({"deploymentSpecifications": [{**SPEC, "instanceType": "NCP.GPU.X"}]}, "deploymentSpecifications[0].instanceType"),
    ({"deploymentSpecifications": [{**SPEC, "instanceType": "NCP.GPU.L40S_1x"}]}, "deploymentSpecifications[0].instanceType"),
    ({"deploymentSpecifications": [{**SPEC, "backend": "aws"}]}, "deploymentSpecifications[0].backend"),
    ({"deploymentSpecifications": [{**SPEC, "maxInstances": 0}]}, "deploymentSpecifications[0].maxInstances"),
    ({"deploymentSpecifications": [{**SPEC, "minInstances": -1}]}, "deploymentSpecifications[0].minInstances"),
    ({"deploymentSpecifications": [{**SPEC, "minInstances": 3}]}, "deploymentSpecifications[0].minInstances"),
    ({"deploymentSpecifications": [{**SPEC, "minInstances": None}]}, "deploymentSpecifications[0].minInstances"),
    ({"deploymentSpecifications": [{**SPEC, "maxRequestConcurrency": 0}]}, "deploymentSpecifications[0].maxRequestConcurrency"),
    ({"deploymentSpecifications": [{**SPEC, "maxRequestConcurrency": 16385}]}, "deploymentSpecifications[0].maxRequestConcurrency"),
    ({"deploymentSpecifications": [{**SPEC, "clusters": "a"}]}, "deploymentSpecifications[0].clusters"),
    ({"deploymentSpecifications": [{**SPEC, "preferredOrder": 100}]}, "deploymentSpecifications[0].preferredOrder"),
    ({"deploymentSpecifications": [{**SPEC, "configuration": []}]}, "deploymentSpecifications[0].configuration"),
    ({"deploymentSpecifications": [{**SPEC, "helmValidationPolicy": {"name": "Lax"}}]}, "helmValidationPolicy.name"),
    ({"deploymentSpecifications": [{**SPEC, "autoscalingConfiguration": {"scaleUpDetails": {"factor": 0.5}}}]}, "scaleUpDetails.factor"),
    (
        {"deploymentSpecifications": [{**SPEC, "autoscalingConfiguration": {"scaleDownDetails": {"factor": 1.5}}}]},
        "scaleDownDetails.factor",
    ),
    (
        {"deploymentSpecifications": [{**SPEC, "autoscalingConfiguration": {"scaleUpDetails": {"threshold": 101}}}]},
        "scaleUpDetails.threshold",
    ),
]


@pytest.mark.parametrize("body,field", BAD_SPECS, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_SPECS)])
async def test_deployment_validation(api, body, field):
    fn = await api.create_function()
    p = await api.problem("POST", dep_path(fn), body, status=400)
    assert field in p["detail"], p
    assert await status(api, fn) == "INACTIVE"
    assert await api.store.list(records.DEPLOYMENTS) == []


async def test_deploy_unknown_function_is_404(api):
    await api.problem(
        "POST", f"/v2/nvcf/deployments/functions/{UNKNOWN}/versions/{UNKNOWN}", {"deploymentSpecifications": [SPEC]}, status=404
    )


async def test_patch_gpu_specification(api):
    fn = await api.create_function()
    dep = await api.deploy(fn)
    gid = dep["deploymentSpecifications"][0]["gpuSpecificationId"]
    path = f"/v2/nvcf/deployments/{dep['deploymentId']}/gpu-specifications/{gid}"
    spec = (await api.call("PATCH", path, {"minInstances": 1, "maxInstances": 3}))["gpuSpecification"]
    assert (spec["minInstances"], spec["maxInstances"], spec["gpuSpecificationId"]) == (1, 3, gid)
    assert (await api.call("GET", dep_path(fn)))["deployment"]["deploymentSpecifications"] == [spec]
    for body, field in (
        ({"gpu": "L40S"}, "gpu"),
        ({}, "minInstances"),
        ({"minInstances": 5}, "minInstances"),
        ({"autoscalingConfigurationPolicy": "X"}, "autoscalingConfigurationPolicy"),
        ({"maxRequestConcurrency": 4}, "maxRequestConcurrency"),
    ):
        p = await api.problem("PATCH", path, body, status=400)
        assert field in p["detail"]
    await api.problem("PATCH", f"/v2/nvcf/deployments/{dep['deploymentId']}/gpu-specifications/{UNKNOWN}", {"minInstances": 1}, status=404)
    await api.problem("PATCH", f"/v2/nvcf/deployments/{UNKNOWN}/gpu-specifications/{gid}", {"minInstances": 1}, status=404)
    assert (await api.call("GET", dep_path(fn)))["deployment"]["deploymentSpecifications"] == [spec]


async def test_put_updates_the_counts_of_the_deployed_spec(api):
    fn = await api.create_function()
    dep = await api.deploy(fn)
    gid = dep["deploymentSpecifications"][0]["gpuSpecificationId"]
    body = {"deploymentSpecifications": [{"gpuSpecificationId": gid, "minInstances": 0, "maxInstances": 5, "maxRequestConcurrency": 8}]}
    [spec] = (await api.call("PUT", dep_path(fn), body))["deployment"]["deploymentSpecifications"]
    assert spec["gpuSpecificationId"] == gid and spec["maxInstances"] == 5 and spec["maxRequestConcurrency"] == 8
    for bad in ({"maxInstances": 0}, {"minInstances": -1}, {"maxRequestConcurrency": 16385}, {"minInstances": 9}):
        one = {"deploymentSpecifications": [{"gpuSpecificationId": gid, **bad}]}
        await api.problem("PUT", dep_path(fn), one, status=400)
    await api.problem("PUT", dep_path(fn), {"deploymentSpecifications": []}, status=400)
    other = await api.create_function(name="other")
    await api.problem("PUT", dep_path(other), body, status=404)


async def test_delete_non_graceful_removes_the_deployment(api):
    fn = await api.create_function()
    await api.deploy(fn)
    got = (await api.call("DELETE", dep_path(fn) + "?graceful=false"))["function"]
    assert got["status"] == "INACTIVE"
    assert await api.store.get(records.DEPLOYMENTS, records.version_key(fn["id"], fn["versionId"])) is None
    p = await api.problem("DELETE", dep_path(fn), status=400)
    assert "not deployed" in p["detail"]
    assert (await api.deploy(fn))["functionStatus"] == "ACTIVE"  # can deploy again


async def test_graceful_delete_keeps_the_doc_until_the_reconciler_removes_it(api):
    fn = await api.create_function()
    await api.deploy(fn, {**SPEC, "minInstances": 1})
    got = (await api.call("DELETE", dep_path(fn) + "?graceful=true"))["function"]
    assert got["status"] == "INACTIVE"
    key = records.version_key(fn["id"], fn["versionId"])
    assert (await api.store.get(records.DEPLOYMENTS, key)).value["graceful"] is True
    p = await api.problem("POST", dep_path(fn), {"deploymentSpecifications": [SPEC]}, status=400)
    assert p["detail"] == GRACEFUL_WAIT
    await api.store.delete(records.DEPLOYMENTS, key)  # what the reconciler does once drained
    assert (await api.deploy(fn))["functionStatus"] == "ACTIVE"


async def test_delete_bad_graceful_flag(api):
    fn = await api.create_function()
    await api.deploy(fn)
    p = await api.problem("DELETE", dep_path(fn) + "?graceful=maybe", status=400)
    assert "graceful" in p["detail"]
    assert await status(api, fn) == "ACTIVE"


@pytest.mark.parametrize(
    ("overrides", "limitation"),
    [
        (
            {"containerImage": None, "containerEnvironment": None, "helmChart": "oci://charts/model:1", "helmChartServiceName": "svc"},
            "Helm",
        ),
        ({"containerImage": None, "models": [{"name": "m", "version": "1", "uri": "s3://m"}]}, "models only"),
    ],
)
async def test_deploy_refuses_functions_no_backend_can_run(api, overrides, limitation):
    fn = await api.create_function(**overrides)
    p = await api.problem("POST", dep_path(fn), {"deploymentSpecifications": [SPEC]}, status=400)
    assert limitation in p["detail"] and "containerImage" in p["detail"], p
    assert await status(api, fn) == "INACTIVE"
    assert await api.store.list(records.DEPLOYMENTS) == []


async def test_undeploy_that_races_a_status_write_applies_to_the_new_state(api, monkeypatch):
    """The reconciler writes the function's status while instances come up; an undeploy
    that loses that compare-and-set reads again instead of answering 409."""
    from fngate.control import records
    from fngate.control.store.base import Put

    fn = await api.create_function()
    await api.deploy(fn)
    key = records.version_key(fn["id"], fn["versionId"])
    real_commit = api.store.commit
    raced: list[int] = []

    async def commit_after_a_status_write(ops):
        if not raced:  # the reconciler's write lands between the API's read and its commit
            rec = await api.store.get(records.FUNCTIONS, key)
            raced.append(await real_commit([Put(records.FUNCTIONS, key, {**rec.value, "status": "ACTIVE"}, expect=rec.revision)]))
        return await real_commit(ops)

    monkeypatch.setattr(api.store, "commit", commit_after_a_status_write)
    body = await api.call("DELETE", f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}")
    assert raced and body["function"]["status"] == "INACTIVE"
    assert await api.store.get(records.DEPLOYMENTS, key) is None
