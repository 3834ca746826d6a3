"""Read-your-writes (issue 16): a function the management API reports ACTIVE is invokable
at once, whichever routing source the gateway has (in-process, the internal long poll
with --workers 2, Redis). Deployed with minInstances 0 the deploy answer itself says
ACTIVE; the invocation right after it must never be a 404."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.read_your_writes import SOURCES, deployments, serve_on
from tests.e2e.test_static import external_echo  # noqa: F401  # the fixture
from tests.support.serve_api import ServeApi


def _deploy_and_invoke(api: ServeApi, port: int, rounds: int) -> list[int]:
    fid, vid = api.create("ryw")
    statuses = []
    with deployments(api, fid, vid, port) as deployed, httpx.Client(timeout=60) as client:
        for _ in range(rounds):
            deployed()
            inv = client.post(api.gateway + "/echo", headers={**api.headers, "function-id": fid, "NVCF-POLL-SECONDS": "30"})
            statuses.append(inv.status_code)
    return statuses


@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_short(fngate_serve, tmp_path, source, request, external_echo):  # noqa: F811
    api = serve_on(source, fngate_serve, tmp_path, request)
    statuses = _deploy_and_invoke(api, external_echo[0], 10)
    assert set(statuses) == {200}, statuses


@pytest.mark.slow
@pytest.mark.parametrize("source", list(SOURCES))
def test_deployed_active_is_invokable_at_once_100_times(fngate_serve, tmp_path, source, request, external_echo):  # noqa: F811
    api = serve_on(source, fngate_serve, tmp_path, request)
    statuses = _deploy_and_invoke(api, external_echo[0], 100)
    assert set(statuses) == {200}, statuses
