"""Gateway workers in their own processes: routing reaches them (internal long-poll
or Redis) and their load reports reach the autoscaler (internal PUT or Redis keys),
so a request to a function at zero still starts an instance."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import Api, write_config


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_scale_from_zero_with_gateway_workers(fngate_serve, tmp_path, store, request):
    args = ["--workers", "2"]
    if store == "redis":
        args += ["--store", request.getfixturevalue("redis_url")]
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}],
                          autoscaler={"interval": 0.3, "window": 2})
    api = Api(fngate_serve("--config", str(config), *args))
    fid, vid = api.create(f"e2e-workers-{store}")
    api.deploy(fid, vid, min_i=0, max_i=1)
    api.wait_status(fid, vid, "ACTIVE")
    r = api.invoke(fid, headers={"NVCF-POLL-SECONDS": "30"}, timeout=40)
    assert r.status_code == 200, r.text
    assert len(api.ready_instances(fid, vid)) == 1
    for _ in range(4):  # new connections land on either worker: both have the new routing
        assert api.invoke(fid).status_code == 200
