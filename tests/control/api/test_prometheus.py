"""GET /metrics on the API port: NVCF's state metrics and fngate's control-plane numbers,
for the functions the key may list (Prometheus itself parses them in
tests/deploy/test_dashboards.py)."""

from __future__ import annotations

from fngate.control.promtext import Exposition

from .conftest import SPEC


async def _scrape(api, key: str | None = None) -> Exposition:
    resp = await api.client.get("/metrics", headers=api.auth(key) if key else api.auth())
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Exposition.parse(await resp.text(), drop=())


async def test_needs_a_key_with_a_list_scope(api) -> None:
    await api.problem("GET", "/metrics", key=None, status=401)
    invoke_only = await api.key("invoke_function")
    assert "list_functions" in (await api.problem("GET", "/metrics", key=invoke_only, status=403))["detail"]


async def test_state_metrics_follow_the_functions_the_key_may_list(api) -> None:
    fn = await api.create_function()
    other = await api.create_function(name="other")
    await api.deploy(fn, {**SPEC, "minInstances": 1, "maxInstances": 3})
    m = await _scrape(api)
    ident = {"function_id": fn["id"], "function_version_id": fn["versionId"], "name": fn["name"]}
    assert m.total("nvcf_function_info", **ident, container_image="nvcr.io/org/my_model_image:1.0") == 1
    assert m.by("nvcf_function_status", "status", function_id=fn["id"]) == {"DEPLOYING": 1}
    assert m.by("nvcf_function_status", "status", function_id=other["id"]) == {"INACTIVE": 1}
    assert m.total("nvcf_function_instances_current", **ident) == 0
    assert m.total("nvcf_function_queue_depth", **ident) == 0
    assert m.by("fngate_instances", "state", function_id=fn["id"]) == {"STARTING": 0, "ACTIVE": 0, "DRAINING": 0}
    assert m.total("fngate_deployment_min_instances", **ident, gpu="H100", instance_type="NCP.GPU.H100_1x") == 1
    assert m.total("fngate_deployment_max_instances", **ident) == 3
    assert m.total("fngate_instance_type_capacity", backend="local", gpu="L40S", instance_type="NCP.GPU.L40S_1x") == 8
    assert m.total("fngate_store_up") == 1

    narrow = await api.key("list_functions", resources=[{"type": "function", "id": f"{other['id']}/*"}])
    seen = await _scrape(api, narrow)
    assert set(seen.by("nvcf_function_info", "function_id")) == {other["id"]}


async def test_api_requests_are_counted_by_route_template_never_by_raw_path(api) -> None:
    fn = await api.create_function()
    await api.call("GET", f"/v2/nvcf/functions/{fn['id']}/versions/{fn['versionId']}")
    await api.problem("GET", "/v2/nvcf/functions/00000000-0000-0000-0000-000000000000/versions", status=404)
    for junk in ("/no/such/path", "/another-invented-path"):
        await api.client.get(junk)
    m = await _scrape(api)
    routes = m.by("fngate_api_requests_total", "route")
    assert routes["/v2/nvcf/functions/{functionId}/versions/{functionVersionId}"] == 1
    assert m.total("fngate_api_requests_total", route="/v2/nvcf/functions/{functionId}/versions", status="404") == 1
    assert m.total("fngate_api_requests_total", route="/v2/nvcf/functions", method="POST", status="200") == 1
    assert routes["unmatched"] == 2 and not any("invented" in r for r in routes)
    assert m.total("fngate_api_request_duration_seconds_count") >= 5
    buckets = m.buckets("fngate_api_request_duration_seconds")
    assert buckets[-1][1] == m.total("fngate_api_request_duration_seconds_count")
