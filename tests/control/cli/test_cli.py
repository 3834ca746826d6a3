"""The CLI against a real `fngate serve` subprocess, and what survives a restart."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from fngate.control.cli import main
from tests.conftest import REPO, start_serve
from tests.support.serve_api import ServeApi


def fngate(sp, *args: str, key: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI in this process (the server is the real subprocess), env as a user sets it."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in ("FNGATE_API_URL", "FNGATE_KEY")}
    os.environ.update(FNGATE_API_URL=sp.api_url, FNGATE_KEY=key or sp.admin_key)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    proc = subprocess.CompletedProcess(["fngate", *args], code, out.getvalue(), err.getvalue())
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def fngate_json(sp, *args: str, **kw):
    return json.loads(fngate(sp, *args, "--json", **kw).stdout)


@pytest.fixture
def server(fngate_serve):
    """A server of the test's own: the tests create functions and keys on it."""
    return fngate_serve()


def test_serve_prints_urls_and_the_generated_admin_key_once(server):
    out = server.output()
    assert server.api_url in out
    assert server.admin_key in out
    key_file = server.data_dir / "admin.key"
    assert key_file.read_text().strip() == server.admin_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert server.stop() == 0
    again = start_serve(server.data_dir)
    try:
        assert again.admin_key == server.admin_key
        assert server.admin_key not in again.output()  # printed once, when generated
    finally:
        again.stop()


def test_admin_key_from_environment(fngate_serve):
    sp = fngate_serve(env={"FNGATE_ADMIN_KEY": "nvapi-from-env"})
    assert sp.admin_key == "nvapi-from-env"
    assert not (sp.data_dir / "admin.key").exists()
    assert fngate_json(sp, "function", "list") == {"functions": []}


def test_function_deployment_queue_lifecycle(server):
    created = fngate_json(
        server,
        "function",
        "create",
        "--name",
        "echo",
        "--image",
        "fngate/echo",
        "--inference-url",
        "/echo",
        "--tag",
        "demo",
        "--env",
        "LOG_LEVEL=INFO",
    )["function"]
    fid, vid = created["id"], created["versionId"]
    assert created["containerEnvironment"] == [{"key": "LOG_LEVEL", "value": "INFO"}]
    table = fngate(server, "function", "list").stdout
    assert "FUNCTION ID" in table and fid in table and "INACTIVE" in table
    assert fngate_json(server, "function", "get", fid, vid)["function"]["tags"] == ["demo"]
    assert "status: INACTIVE" in fngate(server, "function", "get", fid, vid).stdout
    assert fngate_json(server, "function", "update", fid, vid, "--tag", "x")["function"]["tags"] == ["x"]

    dep = fngate_json(
        server,
        "deployment",
        "create",
        fid,
        vid,
        "--gpu",
        "H100",
        "--instance-type",
        "NCP.GPU.H100_1x",
        "--min-instances",
        "0",
        "--max-instances",
        "2",
    )["deployment"]
    assert dep["functionStatus"] == "ACTIVE"
    assert "ACTIVE" in fngate(server, "deployment", "get", fid, vid).stdout
    spec = fngate_json(server, "deployment", "update", fid, vid, "--max-instances", "3")["gpuSpecification"]
    assert spec["maxInstances"] == 3
    queues = fngate_json(server, "queue", fid)
    assert queues["queues"][0]["queueDepth"] == 0
    assert "QUEUE DEPTH" in fngate(server, "queue", fid, vid).stdout
    assert "INACTIVE" in fngate(server, "deployment", "delete", fid, vid).stdout
    fngate(server, "function", "delete", fid, vid)
    assert fid not in fngate(server, "function", "list").stdout


def test_errors_print_the_problem_detail_and_exit_non_zero(server):
    unknown = "00000000-0000-4000-8000-000000000000"
    bad = fngate(server, "function", "get", unknown, unknown, check=False)
    assert bad.returncode == 1 and "404 Not Found" in bad.stderr and unknown in bad.stderr
    bad = fngate(server, "function", "get", "nope", "nope", check=False)
    assert bad.returncode == 1 and "400 Bad Request" in bad.stderr and "nope" in bad.stderr
    wrong_key = fngate(server, "function", "list", key="nvapi-wrong", check=False)
    assert wrong_key.returncode == 1 and "403 Forbidden: Authorization failed" in wrong_key.stderr
    not_a_key = fngate(server, "function", "list", key="wrong", check=False)
    assert not_a_key.returncode == 1 and "401" in not_a_key.stderr
    pos = fngate(server, "queue", "--position", "req-1", check=False)
    assert pos.returncode == 1 and "req-1" in pos.stderr
    fn = fngate_json(server, "function", "create", "--name", "f", "--image", "i", "--inference-url", "/")["function"]
    bad_gpu = fngate(
        server, "deployment", "create", fn["id"], fn["versionId"], "--gpu", "B300", "--instance-type", "NCP.GPU.H100_1x", check=False
    )
    assert bad_gpu.returncode == 1 and "B300" in bad_gpu.stderr


def test_keys_create_list_revoke(server):
    created = fngate_json(server, "key", "create", "--scope", "list_functions", "--description", "reader", "--expires-in", "3600")
    plain, key_id = created["value"], created["id"]
    assert plain.startswith("nvapi-nvcf-stg-") and created["status"] == "ACTIVE" and created["owner_id"] == "fngate-cli"
    assert "functions" in fngate_json(server, "function", "list", key=plain)
    listing = fngate(server, "key", "list").stdout
    assert key_id in listing and plain not in listing and "reader" in listing and "nvapi-nvcf-stg-**********" + plain[-3:] in listing
    assert "list_functions" in fngate(server, "key", "get", key_id).stdout
    assert key_id not in fngate(server, "key", "list", "--owner", "someone-else").stdout
    denied = fngate(server, "key", "list", key=plain, check=False)
    assert denied.returncode == 1 and "403" in denied.stderr
    fn = fngate_json(server, "function", "create", "--name", "keyed", "--image", "i", "--inference-url", "/")["function"]
    updated = fngate_json(server, "key", "update", key_id, "--scope", "list_functions", "--function-id", fn["id"])
    assert updated["authorizations"]["policies"][0]["resources"] == [{"id": f"{fn['id']}/*", "type": "function"}]
    fngate(server, "key", "revoke", key_id)
    assert fngate(server, "function", "list", key=plain, check=False).returncode == 1


def test_unreachable_api_is_a_clear_error(tmp_path):
    env = {**os.environ, "FNGATE_API_URL": "http://127.0.0.1:9", "FNGATE_KEY": "k"}
    proc = subprocess.run(
        [sys.executable, "-m", "fngate", "function", "list"], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=30
    )
    assert proc.returncode == 1 and "cannot reach the API" in proc.stderr


def test_bad_serve_options_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fngate", "serve", "--store", "postgres://x", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=30,
    )
    assert proc.returncode == 2 and "--store" in proc.stderr


def test_acknowledged_writes_survive_kill_9(fngate_serve, tmp_path):
    sp = fngate_serve()
    api = ServeApi(sp)
    fn = api.call("POST", "/v2/nvcf/functions", {"name": "durable", "inferenceUrl": "/", "containerImage": "fngate/echo"})["function"]
    dep = api.call(
        "POST",
        f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
        {"deploymentSpecifications": [{"gpu": "H100", "instanceType": "NCP.GPU.H100_1x", "minInstances": 0, "maxInstances": 1}]},
    )
    key = fngate_json(sp, "key", "create", "--scope", "list_functions")["value"]
    sp.stop(signal.SIGKILL)  # no chance to flush anything after the responses
    again = fngate_serve(data_dir=sp.data_dir)
    got = fngate_json(again, "function", "get", fn["id"], fn["versionId"], key=key)["function"]
    assert got["status"] == "ACTIVE" and got["name"] == "durable"
    assert fngate_json(again, "deployment", "get", fn["id"], fn["versionId"])["deployment"] == dep["deployment"]


def test_serve_on_the_redis_store(fngate_serve, redis_url):
    sp = fngate_serve("--store", redis_url)
    fn = fngate_json(sp, "function", "create", "--name", "r", "--image", "i", "--inference-url", "/")["function"]
    sp.stop()
    again = fngate_serve("--store", redis_url, data_dir=sp.data_dir)
    assert fngate_json(again, "function", "get", fn["id"], fn["versionId"])["function"]["name"] == "r"
