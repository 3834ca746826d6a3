"""Secrets through a real `fngate serve`, on SQLite and on Redis: NVCF's PUT, delivery to
the instance as a secrets.json file (refreshed in place), and encryption at rest.

Regression test for the plaintext finding: the values were in the SQLite file (0644, in a
0755 directory) where `grep` found them. Now nothing under the data dir, and nothing in a
Redis dump, holds a secret value.
"""

from __future__ import annotations

import base64
import os
import stat
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from tests.e2e.helpers import write_config
from tests.support.serve_api import ServeApi as Api

WORKER = str(Path(__file__).resolve().parents[2] / "support" / "secrets_worker.py")


def grep(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under root holding any needle (what `grep -r` would find)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n!r}" for n in needles if n in data]
    return hits


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=["sqlite", "redis"])
def store_args(request):
    if request.param == "sqlite":
        return []
    return ["--store", request.getfixturevalue("redis_url")]


def invoke_secrets(api: Api, fid: str) -> httpx.Response:
    return httpx.get(api.gateway + "/secrets", headers={**api.headers, "function-id": fid}, timeout=30)


def test_secrets_are_delivered_refreshed_and_never_stored_in_the_clear(fngate_serve, tmp_path, store_args, request):
    config = write_config(
        tmp_path / "fngate.yaml", catalog={"test/secrets": [sys.executable, WORKER, "--host", "{host}", "--port", "{port}"]}
    )
    sp = fngate_serve("--config", str(config), *store_args)
    api = Api(sp)
    token, rotated, db_password = (f"hf_{uuid.uuid4().hex}" for _ in range(3))
    fid, vid = api.create(
        "with-secrets",
        image="test/secrets",
        inferenceUrl="/secrets",
        secrets=[{"name": "HF_TOKEN", "value": token}],
    )
    # the spec's example body, merged into what create set
    put = httpx.put(
        f"{sp.api_url}/v2/nvcf/secrets/functions/{fid}/versions/{vid}",
        json={"secrets": [{"name": "HF_TOKEN", "value": token}, {"name": "db.config", "value": {"host": "db", "password": db_password}}]},
        headers=api.headers,
    )
    assert put.status_code == 204, put.text
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")

    got = invoke_secrets(api, fid)
    assert got.status_code == 200, got.text
    assert orjson.loads(got.content) == {"HF_TOKEN": token, "db.config": {"host": "db", "password": db_password}}
    secrets_file = Path(got.headers["x-secrets-file"])
    assert secrets_file.name == "secrets.json" and not secrets_file.is_relative_to(sp.data_dir)
    assert mode(secrets_file) == 0o600 and mode(secrets_file.parent.parent) == 0o700

    # a new value reaches the running instance in place (same process), as NVCF's sidecar does
    pid = got.headers["x-pid"]
    put = httpx.put(
        f"{sp.api_url}/v2/nvcf/secrets/functions/{fid}/versions/{vid}",
        json={"secrets": [{"name": "HF_TOKEN", "value": rotated}]},
        headers=api.headers,
    )
    assert put.status_code == 204, put.text
    api.wait(lambda: orjson.loads(invoke_secrets(api, fid).content).get("HF_TOKEN") == rotated, "the rotated value in the file")
    again = invoke_secrets(api, fid)
    assert again.headers["x-pid"] == pid and orjson.loads(again.content)["db.config"]["password"] == db_password

    needles = [v.encode() for v in (token, rotated, db_password)]
    # the values are nowhere under the data dir: database, WAL, logs, instance files
    assert grep(sp.data_dir, needles) == []
    assert mode(sp.data_dir) == 0o700
    assert mode(sp.data_dir / "secrets.key") == 0o600
    if not store_args:
        for name in ("fngate.db", "fngate.db-wal", "fngate.db-shm"):
            assert mode(sp.data_dir / name) == 0o600, name
    else:
        server = request.getfixturevalue("redis_server")
        with redis.Redis(host=server.host, port=server.port) as client:
            client.save()
            dump = Path(client.config_get("dir")["dir"]) / client.config_get("dbfilename")["dbfilename"]
        assert dump.exists()
        assert [n for n in needles if n in dump.read_bytes()] == []
        assert b"secrets" in dump.read_bytes()  # the records are in the dump, sealed

    # undeploy: the instance's file goes with it
    api.call("DELETE", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    api.wait(lambda: not secrets_file.exists(), "the secrets file removed")


def test_restart_reads_the_sealed_secrets_back_and_the_key_can_come_from_the_environment(fngate_serve, tmp_path, store_args):
    config = write_config(
        tmp_path / "fngate.yaml", catalog={"test/secrets": [sys.executable, WORKER, "--host", "{host}", "--port", "{port}"]}
    )
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {"FNGATE_SECRETS_KEY": key}
    data_dir = tmp_path / "data"
    sp = fngate_serve("--config", str(config), *store_args, env=env, data_dir=data_dir)
    api = Api(sp)
    value = f"v_{uuid.uuid4().hex}"
    fid, vid = api.create("restart", image="test/secrets", inferenceUrl="/secrets", secrets=[{"name": "K", "value": value}])
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    sp.stop()
    assert not (data_dir / "secrets.key").exists()  # the environment's key is used, none is written

    sp = fngate_serve("--config", str(config), *store_args, env=env, data_dir=data_dir)
    api = Api(sp)
    api.wait_status(fid, vid, "ACTIVE")
    api.wait(lambda: invoke_secrets(api, fid).status_code == 200, "the instance answering")
    assert orjson.loads(invoke_secrets(api, fid).content) == {"K": value}
    assert grep(data_dir, [value.encode()]) == []


def test_telemetry_secrets_reach_the_instance_as_the_accounts_secrets_file(fngate_serve, tmp_path, store_args):
    """NVCF renders the account-level secrets of a function's telemetries into
    /var/secrets/accounts-secrets.json ({name: value}); the local backend writes that file
    (named by FNGATE_ACCOUNTS_SECRETS_FILE) beside secrets.json, refreshed in place. Another
    telemetry's secret, or one the function does not name, is not in it."""
    config = write_config(
        tmp_path / "fngate.yaml", catalog={"test/secrets": [sys.executable, WORKER, "--host", "{host}", "--port", "{port}"]}
    )
    sp = fngate_serve("--config", str(config), *store_args)
    api = Api(sp)
    logs, metrics, unused = (str(uuid.uuid4()) for _ in range(3))
    key, rotated, other = (f"dd_{uuid.uuid4().hex}" for _ in range(3))

    def put_telemetry_secret(telemetry_id: str, name: str, value) -> None:
        r = httpx.put(
            f"{sp.api_url}/v2/nvcf/secrets/telemetries/{telemetry_id}", json={"secret": {"name": name, "value": value}}, headers=api.headers
        )
        assert r.status_code == 204, r.text

    put_telemetry_secret(logs, "splunk-prd", key)
    put_telemetry_secret(unused, "not-mine", other)
    fid, vid = api.create(
        "with-telemetries",
        image="test/secrets",
        inferenceUrl="/accounts-secrets",
        telemetries={"logsTelemetryId": logs, "metricsTelemetryId": metrics},
    )
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")

    def accounts_file() -> httpx.Response:
        return httpx.get(api.gateway + "/accounts-secrets", headers={**api.headers, "function-id": fid}, timeout=30)

    got = accounts_file()
    assert got.status_code == 200, got.text
    assert orjson.loads(got.content) == {"splunk-prd": key}
    path = Path(got.headers["x-accounts-secrets-file"])
    assert path.name == "accounts-secrets.json" and not path.is_relative_to(sp.data_dir) and mode(path) == 0o600
    assert got.headers["x-secrets-file"] == ""  # the function has no secrets of its own
    # a secret set later for another named telemetry, and a new value, reach it in place
    pid = got.headers["x-pid"]
    put_telemetry_secret(metrics, "Grafana_prd", {"username": "u", "password": rotated})
    put_telemetry_secret(logs, "splunk-prd", rotated)
    want = {"splunk-prd": rotated, "Grafana_prd": {"username": "u", "password": rotated}}
    api.wait(lambda: orjson.loads(accounts_file().content) == want, "the telemetry secrets refreshed in the file")
    assert accounts_file().headers["x-pid"] == pid
    assert grep(sp.data_dir, [v.encode() for v in (key, rotated, other)]) == []
    api.call("DELETE", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    api.wait(lambda: not path.exists(), "the accounts secrets file removed")
