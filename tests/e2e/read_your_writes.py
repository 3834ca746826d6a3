"""What the read-your-writes tests (issue 16) share: `fngate serve` on each routing source
(in-process, the internal long poll with --workers 2, Redis), and a deploy on a static
backend with minInstances 0, whose answer already says ACTIVE."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.support.serve_api import ServeApi

SOURCES = {
    "in-process": ["--workers", "1"],
    "long-poll": ["--workers", "2"],
    "redis": ["--workers", "1", "--store", "REDIS"],
}


def serve_on(source: str, fngate_serve, tmp_path, request: pytest.FixtureRequest) -> ServeApi:
    args = list(SOURCES[source])
    if "REDIS" in args:
        args[args.index("REDIS")] = request.getfixturevalue("redis_url")
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local"}, {"name": "edge", "type": "static", "probeInterval": 0.1}],
        autoscaler={"interval": 0.2, "window": 1},
    )
    return ServeApi(fngate_serve("--config", str(config), *args))


@contextmanager
def deployments(api: ServeApi, fid: str, vid: str, port: int) -> Iterator[Callable[[], None]]:
    """`deployed()` deploys the version on the static instance at `port` with minInstances
    0, asserts the answer says ACTIVE, and undeploys it again when the next one comes."""
    spec = {
        "gpu": "L40S",
        "instanceType": "NCP.GPU.L40S_1x",
        "minInstances": 0,
        "maxInstances": 1,
        "backend": "edge",
        "configuration": {"endpoints": [f"http://127.0.0.1:{port}"]},
    }
    url = api.sp.api_url + f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}"
    with httpx.Client(timeout=60) as client:
        live = False

        def deployed() -> None:
            nonlocal live
            if live:
                r = client.delete(url, headers=api.headers)
                assert r.status_code == 200, r.text
            r = client.post(url, json={"deploymentSpecifications": [spec]}, headers=api.headers)
            assert r.status_code == 200 and r.json()["deployment"]["functionStatus"] == "ACTIVE", r.text
            live = True

        yield deployed
