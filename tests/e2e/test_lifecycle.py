"""End to end through a real `fngate serve` subprocess: real sample instances, the
real gateway, and states that tell the truth when instances die."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time

import pytest

from tests.e2e.helpers import alive, instance_pid, write_config
from tests.support.serve_api import ServeApi


@pytest.fixture
def serve(fngate_serve, tmp_path):
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local", "probeInterval": 0.2, "restartBackoff": 1.5, "unhealthyAfter": 2}],
    )

    def start(**kw):
        sp = fngate_serve("--config", str(config), **kw)
        if "http_port" not in sp.ready:
            pytest.skip("the gateway is not wired into fngate serve yet")
        return sp

    return start


def test_deploy_invoke_and_states_follow_instance_deaths(serve):
    sp = serve()
    api = ServeApi(sp)
    fid, vid = api.create("e2e-echo")
    assert api.deploy(fid, vid, min_i=2, max_i=2)["deployment"]["functionStatus"] == "DEPLOYING"
    api.wait_status(fid, vid, "ACTIVE")
    r = api.invoke(fid, params={"q": "1"}, content=b"hello")
    assert r.status_code == 200, r.text
    echoed = r.json()
    assert echoed["path"] == "/echo" and echoed["bodySize"] == 5
    assert {k.lower(): v for k, v in echoed["headers"].items()}["nvcf-function-id"] == fid

    first, _second = api.ready_instances(fid, vid)
    os.kill(instance_pid(sp.data_dir, vid, first["instanceId"]), signal.SIGKILL)
    api.wait_status(fid, vid, "DEGRADING")
    assert api.invoke(fid).status_code == 200  # DEGRADING is still invokable, on the survivor
    api.wait_status(fid, vid, "ACTIVE")

    for inst in api.ready_instances(fid, vid):
        os.kill(instance_pid(sp.data_dir, vid, inst["instanceId"]), signal.SIGKILL)
    api.wait_status(fid, vid, "DEGRADED")
    api.wait_status(fid, vid, "ACTIVE")
    assert api.invoke(fid).status_code == 200


def test_bad_image_is_refused_or_error_with_health_info_and_nothing_else_is_disturbed(serve):
    api = ServeApi(serve())
    good_fid, good_vid = api.create("e2e-good")
    api.deploy(good_fid, good_vid)
    # an image the catalog does not have is refused at deploy (tests/control/api/test_deploy_truth.py)
    bad_fid, bad_vid = api.create("e2e-bad", image="nvcr.io/acme/missing:1.0")
    with pytest.raises(AssertionError, match=r"400.*unknown container image 'nvcr.io/acme/missing:1.0'"):
        api.deploy(bad_fid, bad_vid)
    # one whose process dies at start (arguments it cannot take) goes to ERROR with the reason
    dead_fid, dead_vid = api.create("e2e-dead", containerArgs="--no-such-flag")
    api.deploy(dead_fid, dead_vid)
    api.wait_status(dead_fid, dead_vid, "ERROR")
    dep = api.call("GET", f"/v2/nvcf/deployments/functions/{dead_fid}/versions/{dead_vid}")["deployment"]
    assert "exited with code" in dep["healthInfo"][0]["error"]
    api.wait_status(good_fid, good_vid, "ACTIVE")
    assert api.invoke(good_fid).status_code == 200


def test_restart_restores_deployments_and_leaves_no_orphans(serve, tmp_path):
    sp = serve()
    api = ServeApi(sp)
    fid, vid = api.create("e2e-restart")
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    [inst] = api.ready_instances(fid, vid)
    pid = instance_pid(sp.data_dir, vid, inst["instanceId"])
    assert alive(pid)
    assert sp.stop() == 0
    assert not alive(pid), "fngate serve left its instance running"

    again = serve(data_dir=sp.data_dir)
    api = ServeApi(again)
    api.wait(lambda: api.ready_instances(fid, vid), "the deployment to come back after restart")
    api.wait_status(fid, vid, "ACTIVE")
    assert api.invoke(fid).status_code == 200

    [inst] = api.ready_instances(fid, vid)
    pid = instance_pid(again.data_dir, vid, inst["instanceId"])
    again.stop(signal.SIGKILL)  # no chance to clean up: the instances must still not outlive it
    api.wait(lambda: not alive(pid), "the instance to die with a killed fngate serve", 10)


def test_a_restart_after_kill_9_stops_what_the_killed_run_left_and_serves_again(fngate_serve, tmp_path):
    """kill -9 of `fngate serve` on SQLite while a function runs whose image is a wrapper
    (`sh -c 'server; cleanup'`): the wrapper dies with fngate serve, the server it started
    does not. The restarted fngate serve stops that leftover (it would hold its port and GPU
    for ever), drops the dead instance's record, and brings the function back ACTIVE on a new
    instance. Before, the leftover server ran on after the restart."""
    server = f"{shlex.quote(sys.executable)} -m fngate.backends.samples.echo --host {{host}} --port {{port}}"
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local", "probeInterval": 0.2}],
        catalog={"acme/wrapped": f"sh -c '{server}; echo the server stopped'"},
    )
    sp = fngate_serve("--config", str(config))
    api = ServeApi(sp)
    fid, vid = api.create("e2e-leftover", image="acme/wrapped")
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    [old] = api.ready_instances(fid, vid)
    leftover = instance_pid(sp.data_dir, vid, old["instanceId"])
    sp.stop(signal.SIGKILL)
    time.sleep(0.5)
    assert alive(leftover), "the wrapped server died with fngate serve: nothing was tested"

    again = fngate_serve("--config", str(config), data_dir=sp.data_dir)
    api = ServeApi(again)
    try:
        api.wait(lambda: not alive(leftover), "the restart to stop what the killed run left", 15)
    finally:
        if alive(leftover):  # do not leave it behind when the test fails
            os.kill(leftover, signal.SIGKILL)
    api.wait_status(fid, vid, "ACTIVE")
    assert api.invoke(fid).status_code == 200
    [new] = api.function(fid, vid)["activeInstances"]
    assert new["instanceId"] != old["instanceId"] and not new["draining"], new
