"""Assets (spec part 2, section 6) through a real `fngate serve`, on SQLite and on Redis:
NVCF's example body, the presigned upload and download fngate serves itself, get, list,
delete, and the size limit and expiry."""

from __future__ import annotations

import os
import time
import uuid

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.support.keys import key_body, key_headers


@pytest.fixture(params=["sqlite", "redis"])
def store_args(request):
    return [] if request.param == "sqlite" else ["--store", request.getfixturevalue("redis_url")]


class Client:
    def __init__(self, sp) -> None:
        self.sp = sp
        self.auth = {"Authorization": f"Bearer {sp.admin_key}"}

    def __call__(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.sp.api_url + path, headers={**self.auth, **kw.pop("headers", {})}, timeout=30, **kw)


def test_create_upload_get_list_redirect_delete(fngate_serve, store_args):
    sp = fngate_serve(*store_args)
    api = Client(sp)
    created = api("POST", "/v2/nvcf/assets", json={"contentType": "image/png", "description": "cat"})  # the spec's example
    assert created.status_code == 200, created.text
    body = created.json()
    asset_id = body["assetId"]
    uuid.UUID(asset_id)
    assert body["contentType"] == "image/png" and body["description"] == "cat"
    assert body["uploadUrl"].startswith(sp.api_url + "/")

    # not there until uploaded, as an S3 object would not be
    missing = api("GET", f"/v2/nvcf/assets/{asset_id}")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith(f"Bucket 'fngate-assets' does not contain an object with key 'fngate/{asset_id}'")
    assert api("GET", "/v2/nvcf/assets").json() == {"assets": []}

    data = os.urandom(300_000)
    wrong_type = httpx.put(body["uploadUrl"], content=data, headers={"Content-Type": "image/jpeg"})
    assert wrong_type.status_code == 403  # signed for image/png
    tampered = httpx.put(body["uploadUrl"].replace("signature=", "signature=0"), content=data, headers={"Content-Type": "image/png"})
    assert tampered.status_code == 403
    uploaded = httpx.put(body["uploadUrl"], content=data, headers={"Content-Type": "image/png"})  # no bearer key: presigned
    assert uploaded.status_code == 200, uploaded.text
    assert (sp.data_dir / "assets" / "fngate" / asset_id).read_bytes() == data  # stored under the data dir

    got = api("GET", f"/v2/nvcf/assets/{asset_id}").json()["asset"]
    assert got["assetId"] == asset_id and got["description"] == "cat" and got["contentType"] == "image/png" and got["createdAt"]
    assert api("GET", "/v2/nvcf/assets").json() == {"assets": [{"assetId": asset_id}]}

    redirect = api("GET", f"/v2/nvcf/assets/{asset_id}/content-redirect")
    assert redirect.status_code == 200 and set(redirect.json()) == {"presignedUrl"}  # JSON, not an HTTP redirect
    content = httpx.get(redirect.json()["presignedUrl"])
    assert content.status_code == 200 and content.content == data and content.headers["content-type"] == "image/png"
    assert httpx.get(redirect.json()["presignedUrl"].replace("signature=", "signature=f")).status_code == 403

    assert api("DELETE", f"/v2/nvcf/assets/{asset_id}").status_code == 204
    again = api("DELETE", f"/v2/nvcf/assets/{asset_id}")
    assert again.status_code == 404 and again.json()["detail"] == f"Asset '{asset_id}' does not exist for account 'fngate'"
    assert httpx.get(redirect.json()["presignedUrl"]).status_code == 404
    assert not (sp.data_dir / "assets" / "fngate" / asset_id).exists()


def test_errors(fngate_serve):
    sp = fngate_serve()
    api = Client(sp)
    for bad, detail in (
        ({"description": "d"}, "contentType"),
        ({"contentType": "image/png"}, "description"),
        ({"contentType": "png", "description": "d"}, "Invalid contentType 'png' in the request payload"),
        ({"contentType": "image/png; charset=x", "description": "d"}, "Invalid contentType"),
    ):
        r = api("POST", "/v2/nvcf/assets", json=bad)
        assert r.status_code == 400 and detail in r.json()["detail"], r.text
    assert httpx.post(sp.api_url + "/v2/nvcf/assets", json={"contentType": "a/b", "description": "d"}).status_code == 401
    key = api("POST", "/v1/keys", json=key_body(["list_functions"]), headers=key_headers()).json()["value"]
    r = httpx.get(sp.api_url + "/v2/nvcf/assets", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403
    assert api("GET", "/v2/nvcf/assets/not-a-uuid").status_code == 400
    assert api("GET", "/v2/nvcf/assets/00000000-0000-4000-8000-000000000000").status_code == 404
    # no existence check on content-redirect, as NVCF
    assert api("GET", "/v2/nvcf/assets/00000000-0000-4000-8000-000000000000/content-redirect").status_code == 200


def test_size_limit_and_expiry(fngate_serve, tmp_path):
    config = write_config(tmp_path / "fngate.yaml", assets={"maxSize": 1024, "ttl": 2, "sweepInterval": 0.3})
    sp = fngate_serve("--config", str(config))
    api = Client(sp)
    big = api("POST", "/v2/nvcf/assets", json={"contentType": "text/plain", "description": "big"}).json()
    r = httpx.put(big["uploadUrl"], content=b"x" * 2048, headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    assert api("GET", f"/v2/nvcf/assets/{big['assetId']}").status_code == 404

    small = api("POST", "/v2/nvcf/assets", json={"contentType": "text/plain", "description": "small"}).json()
    assert httpx.put(small["uploadUrl"], content=b"y" * 1024, headers={"Content-Type": "text/plain"}).status_code == 200
    assert api("GET", f"/v2/nvcf/assets/{small['assetId']}").status_code == 200
    path = sp.data_dir / "assets" / "fngate" / small["assetId"]
    assert path.exists()
    deadline = time.monotonic() + 15
    while path.exists() and time.monotonic() < deadline:  # the sweeper removes it after the ttl
        time.sleep(0.1)
    assert not path.exists()
    assert api("GET", f"/v2/nvcf/assets/{small['assetId']}").status_code == 404
    assert api("GET", "/v2/nvcf/assets").json() == {"assets": []}
