"""Queues (depth and position from the LoadBoard), supportedGpus, clusterGroups, routing errors."""

from __future__ import annotations

import time

from fngate.proxy.routing.snapshot import LoadReport, VersionLoad

from .conftest import SPEC


def report(version_id: str, depth: int, queued: list[str]) -> LoadReport:
    return LoadReport(gateway_id="gw-1", at=time.time(), versions={version_id: VersionLoad(queue_depth=depth, queued_ids=queued)})


async def test_queue_depth_per_function_and_version(api):
    fn = await api.create_function()
    await api.problem("GET", f"/v2/nvcf/queues/functions/{fn['id']}", status=404)
    p = await api.problem("GET", f"/v2/nvcf/queues/functions/{fn['id']}/versions/{fn['versionId']}", status=404)
    assert p["detail"] == "Queue not found - Function is likely not deployed"
    await api.deploy(fn)
    api.loadboard.update(report(fn["versionId"], 3, ["r1", "r2", "r3"]))
    expected = {
        "functionId": fn["id"],
        "queues": [{"functionVersionId": fn["versionId"], "functionName": fn["name"], "functionStatus": "ACTIVE", "queueDepth": 3}],
    }
    assert await api.call("GET", f"/v2/nvcf/queues/functions/{fn['id']}") == expected
    assert await api.call("GET", f"/v2/nvcf/queues/functions/{fn['id']}/versions/{fn['versionId']}") == expected
    await api.problem("GET", "/v2/nvcf/queues/functions/00000000-0000-4000-8000-000000000000", status=404)
    await api.problem("GET", f"/v2/nvcf/queues/functions/{fn['id']}/versions/00000000-0000-4000-8000-000000000000", status=404)
    await api.problem("GET", "/v2/nvcf/queues/functions/nope", status=400)


async def test_queue_position(api):
    fn = await api.create_function()
    await api.deploy(fn)
    api.loadboard.update(report(fn["versionId"], 2, ["r1", "r2"]))
    got = await api.call("GET", "/v2/nvcf/queues/r2/position")
    assert got == {"functionId": fn["id"], "functionVersionId": fn["versionId"], "positionInQueue": 2}
    p = await api.problem("GET", "/v2/nvcf/queues/r9/position", status=404)
    assert "r9" in p["detail"]
    limited = await api.key("queue_details", resources=[])
    await api.problem("GET", "/v2/nvcf/queues/r2/position", key=limited, status=403)


async def test_supported_gpus_and_cluster_groups_follow_capacity(api):
    assert await api.call("GET", "/v2/nvcf/supportedGpus") == [{"gpu": "H100", "backend": "local"}, {"gpu": "L40S", "backend": "local"}]
    (group,) = (await api.call("GET", "/v2/nvcf/clusterGroups"))["clusterGroups"]
    assert group["name"] == "local" and group["ncaId"] == "fngate"
    assert {g["name"]: [t["name"] for t in g["instanceTypes"]] for g in group["gpus"]} == {
        "H100": ["NCP.GPU.H100_1x"],
        "L40S": ["NCP.GPU.L40S_1x"],
    }


async def test_unknown_route_and_wrong_method_are_problems(api):
    p = await api.problem("GET", "/v2/nvcf/nothing-here", status=404)
    assert p["title"] == "Not Found"
    p = await api.problem("PATCH", "/v2/nvcf/functions", SPEC, status=405)
    assert "PATCH" in p["detail"]
