"""Input assets at invocation (spec part 2, 6.2-6.3) through a real `fngate serve`: an
asset uploaded through the assets API is laid out for the instance (the progress sample,
which reads NVCF-ASSET-DIR) under its id, on pexec and exec, over HTTP/1.1 and HTTP/2;
another account's or an unknown id gets NVCF's 404, a malformed one 400."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.support.keys import INVOCATION_SCOPES, key_body, key_headers
from tests.support.net import free_port
from tests.support.serve_api import ServeApi


@pytest.fixture(scope="module")
def progress_instance():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fngate.backends.samples.progress", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, "the progress sample did not start"
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory, progress_instance):
    from tests.conftest import start_serve

    tmp = tmp_path_factory.mktemp("assets")
    config = write_config(
        tmp / "fngate.yaml", backends=[{"name": "local", "type": "local"}, {"name": "edge", "type": "static", "probeInterval": 0.1}]
    )
    sp = start_serve(tmp / "data", "--config", str(config))
    try:
        api = ServeApi(sp)
        fid, vid = api.create("assets", inferenceUrl="/run")
        spec = {
            "gpu": "L40S",
            "instanceType": "NCP.GPU.L40S_1x",
            "minInstances": 1,
            "maxInstances": 1,
            "backend": "edge",
            "configuration": {"endpoints": [f"http://127.0.0.1:{progress_instance}"]},
        }
        api.deploy_specs(fid, vid, spec)
        api.wait_status(fid, vid, "ACTIVE")
        asset_id = _upload(api, api.headers, b"hello asset", "text/plain")
        api.call("POST", "/v2/nvcf/accounts/team-b", {"name": "team-b"})
        body = {**key_body(INVOCATION_SCOPES), "nca_id": "team-b"}
        r = httpx.post(sp.api_url + "/v1/keys", json=body, headers={**api.headers, **key_headers("b@example.com")})
        assert r.status_code == 200, r.text
        key_b = {"Authorization": f"Bearer {r.json()['value']}"}
        foreign = _upload(api, key_b, b"team b's", "text/plain")
        yield api, sp, fid, asset_id, foreign, tmp / "data"
    finally:
        sp.stop()


def _upload(api: ServeApi, headers: dict[str, str], data: bytes, ctype: str) -> str:
    r = httpx.post(api.sp.api_url + "/v2/nvcf/assets", json={"contentType": ctype, "description": "t"}, headers=headers)
    assert r.status_code == 200, r.text
    up = httpx.put(r.json()["uploadUrl"], content=data, headers={"Content-Type": ctype})
    assert up.status_code < 300, up.text
    return r.json()["assetId"]


@pytest.mark.parametrize("http2", [False, True])
def test_an_asset_is_laid_out_for_the_instance_under_its_id(world, http2):
    api, _sp, fid, asset_id, _foreign, data_dir = world
    with httpx.Client(http1=not http2, http2=http2, timeout=30) as c:
        url = f"{api.gateway}/v2/nvcf/pexec/functions/{fid}"
        r = c.post(url, json={}, headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": f"{asset_id} ,,"})
        assert r.status_code == 200, r.text
        assert r.json()["assets"] == {asset_id: "hello asset"}
        # the directory is gone after the request
        assert not (data_dir / "inf" / "inputAssets" / r.headers["nvcf-reqid"]).exists()
        # exec: the ids come in the envelope
        r = c.post(
            f"{api.gateway}/v2/nvcf/exec/functions/{fid}",
            json={"requestHeader": {"inputAssetReferences": [asset_id]}, "requestBody": {}},
            headers=api.headers,
        )
        assert r.status_code == 200 and r.json()["response"]["assets"] == {asset_id: "hello asset"}


def test_unknown_foreign_and_malformed_asset_ids(world):
    api, _sp, fid, asset_id, foreign, _data_dir = world
    url = f"{api.gateway}/v2/nvcf/pexec/functions/{fid}"
    for missing in (foreign, str(uuid.uuid4())):  # another account's asset is not the caller's
        r = httpx.post(url, json={}, headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": f"{asset_id},{missing}"}, timeout=30)
        assert r.status_code == 404 and r.json()["detail"] == f"NotFound error: failed to find asset {missing}"
    r = httpx.post(url, json={}, headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": "not-a-uuid"}, timeout=30)
    assert r.status_code == 400 and r.text == "invalid HTTP header (nvcf-input-asset-references)"
    # an empty header is no asset at all
    r = httpx.post(url, json={}, headers={**api.headers, "NVCF-INPUT-ASSET-REFERENCES": ""}, timeout=30)
    assert r.status_code == 200 and r.json()["assets"] == {}
