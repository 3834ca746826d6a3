"""Read-your-writes (issue 16): a function the management API reports ACTIVE is invokable
at once, whichever routing source the gateway has (in-process, the internal long poll
with --workers 2, Redis). Deployed with minInstances 0 the deploy answer itself says
ACTIVE; the invocation right after it must never be a 404."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.e2e.test_static import external_echo  # noqa: F401  # the fixture
from tests.support.serve_api import ServeApi

SOURCES = {
    "in-process": ["--workers", "1"],
    "long-poll": ["--workers", "2"],
    "redis": ["--workers", "1", "--store", "REDIS"],
}


def _serve(fngate_serve, tmp_path, source, request, port):
    args = list(SOURCES[source])
    if "REDIS" in args:
        args[args.index("REDIS")] = request.getfixturevalue("redis_url")
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local"}, {"name": "edge", "type": "static", "probeInterval": 0.1}],
        autoscaler={"interval": 0.2, "window": 1},
    )
    return ServeApi(fngate_serve("--config", str(config), *args))


def _deploy_and_invoke(api: ServeApi, port: int, rounds: int) -> list[int]:
    fid, vid = api.create("ryw")
    spec = {
        "gpu": "L40S",
        "instanceType": "NCP.GPU.L40S_1x",
        "minInstances": 0,
        "maxInstances": 1,
        "backend": "edge",
        "configuration": {"endpoints": [f"http://127.0.0.1:{port}"]},
    }
    path = f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    statuses = []
    with httpx.Client(timeout=60) as client:
        for _ in range(rounds):
            r = client.post(api.sp.api_url + path, json={"deploymentSpecifications": [spec]}, headers=api.headers)
            assert r.status_code == 200 and r.json()["deployment"]["functionStatus"] == "ACTIVE", r.text
            inv = client.post(api.gateway + "/echo", headers={**api.headers, "function-id": fid, "NVCF-POLL-SECONDS": "30"})
            statuses.append(inv.status_code)
            r = client.delete(api.sp.api_url + path, headers=api.headers)
            assert r.status_code == 200, r.text
    return statuses


@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_short(fngate_serve, tmp_path, source, request, external_echo):  # noqa: F811
    api = _serve(fngate_serve, tmp_path, source, request, external_echo[0])
    statuses = _deploy_and_invoke(api, external_echo[0], 10)
    assert set(statuses) == {200}, statuses


@pytest.mark.slow
@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_100_times(fngate_serve, tmp_path, source, request, external_echo):  # noqa: F811
    api = _serve(fngate_serve, tmp_path, source, request, external_echo[0])
    statuses = _deploy_and_invoke(api, external_echo[0], 100)
    assert set(statuses) == {200}, statuses
