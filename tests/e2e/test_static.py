"""A function served by a server that already runs elsewhere (the static backend),
deployed and invoked through a real `fngate serve`."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.support.net import free_port
from tests.support.serve_api import ServeApi


@pytest.fixture
def external_echo():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fngate.backends.samples.echo", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, "the external echo server did not start"
            time.sleep(0.05)
    yield port, proc
    proc.terminate()
    proc.wait(10)


def test_static_endpoint_deploy_invoke_and_loss(fngate_serve, tmp_path, external_echo):
    port, proc = external_echo
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local"}, {"name": "edge", "type": "static", "probeInterval": 0.2, "unhealthyAfter": 2}],
    )
    sp = fngate_serve("--config", str(config))
    api = ServeApi(sp)
    fid, vid = api.create("e2e-static")
    spec = {
        "gpu": "L40S",
        "instanceType": "NCP.GPU.L40S_1x",
        "minInstances": 1,
        "maxInstances": 1,
        "backend": "edge",
        "configuration": {"endpoints": [f"http://127.0.0.1:{port}"]},
    }
    api.call("POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", {"deploymentSpecifications": [spec]})
    api.wait_status(fid, vid, "ACTIVE")
    [inst] = api.ready_instances(fid, vid)
    assert inst["backend"] == "edge"
    r = api.invoke(fid)
    assert r.status_code == 200 and r.json()["path"] == "/echo"
    proc.terminate()
    proc.wait(10)
    api.wait_status(fid, vid, "DEGRADED")
