"""The `/v2/nvcf/accounts/{ncaId}/...` super-admin twins (spec 11.2, 3.8) of the secrets,
rate-limit and assets endpoints, against a real `fngate serve` (SQLite and Redis): the
admin key acts for the path's account; another key needs `admin:<scope>` and must belong
to that account; a function of another account is not found through the twin."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.keys import WILDCARDS, key_body, key_headers

FN = {"name": "twin-fn", "inferenceUrl": "/", "containerImage": "fngate/echo"}
RATE = {"rateLimit": "10-S,500-M", "perUserRate": "1-S"}


class Account:
    def __init__(self, served) -> None:
        self.served = served
        self.nca = f"twin-{uuid.uuid4().hex[:8]}"
        served.ok("POST", f"/v2/nvcf/accounts/{self.nca}", {"name": "twin-account"})
        self.base = f"/v2/nvcf/accounts/{self.nca}"

    def key(self, *scopes: str, nca: str | None = None) -> str:
        body = {**key_body(list(scopes), WILDCARDS), "nca_id": nca or self.nca}
        return self.served.ok("POST", "/v1/keys", body, headers=key_headers(f"{uuid.uuid4().hex[:6]}@{self.nca}"))["value"]

    def function(self) -> dict:
        return self.served.ok("POST", f"{self.base}/functions", FN)["function"]


@pytest.fixture
def account(served) -> Account:
    return Account(served)


def fv(fn: dict) -> str:
    return f"{fn['id']}/versions/{fn['versionId']}"


def test_function_secrets_twin(served, account):
    fn = account.function()
    path = f"{account.base}/secrets/functions/{fv(fn)}"
    served.ok("PUT", path, {"secrets": [{"name": "HF_TOKEN", "value": "hf_xxx"}]}, status=204)
    got = served.ok("GET", f"{account.base}/functions/{fv(fn)}")["function"]
    assert got["secrets"] == ["HF_TOKEN"]
    # a key of the account with admin:update_secrets merges more; without admin: it may not
    admin_scoped = account.key("admin:update_secrets", "admin:list_functions_details")
    served.ok("PUT", path, {"secrets": [{"name": "db.config", "value": {"host": "db"}}]}, status=204, key=admin_scoped)
    assert served.ok("GET", f"{account.base}/functions/{fv(fn)}", key=admin_scoped)["function"]["secrets"] == ["HF_TOKEN", "db.config"]
    plain = account.key("update_secrets")
    assert (
        "admin:update_secrets" in served.problem("PUT", path, {"secrets": [{"name": "x", "value": "y"}]}, status=403, key=plain)["detail"]
    )
    # NVCF's validation answers hold through the twin
    p = served.problem("PUT", path, {"secrets": []}, status=400)
    assert p["detail"] == f"Function id '{fn['id']}', version '{fn['versionId']}': Missing secrets in the payload"
    # a key of another account, and a function of another account
    stranger = Account(served)
    other_key = stranger.key("admin:update_secrets")
    served.problem("PUT", path, {"secrets": [{"name": "x", "value": "y"}]}, status=403, key=other_key)
    mine = served.ok("POST", "/v2/nvcf/functions", FN)["function"]
    p = served.problem("PUT", f"{account.base}/secrets/functions/{fv(mine)}", {"secrets": [{"name": "x", "value": "y"}]}, status=404)
    assert p["detail"] == f"Function id '{mine['id']}', version '{mine['versionId']}': Not found in account '{account.nca}'"
    missing = f"/v2/nvcf/accounts/twin-{uuid.uuid4().hex[:8]}/secrets/functions/{fv(fn)}"
    served.problem("PUT", missing, {"secrets": [{"name": "x", "value": "y"}]}, status=404)


def test_telemetry_secret_twin(served, account):
    path = f"{account.base}/secrets/telemetries/{uuid.uuid4()}"
    served.ok("PUT", path, {"secret": {"name": "api-key", "value": "dd-xxx"}}, status=204)
    served.ok("PUT", path, {"secret": {"name": "api-key", "value": "dd-yyy"}}, status=204, key=account.key("admin:update_secrets"))
    served.problem("PUT", path, {"secret": {"name": "api-key", "value": "v"}}, status=403, key=account.key("update_secrets"))
    assert served.problem("PUT", path, {}, status=400)["detail"] == "Validation failed: field 'secret' is required"
    served.problem("PUT", f"{account.base}/secrets/telemetries/not-a-uuid", {"secret": {"name": "a", "value": "v"}}, status=400)


def test_rate_limit_twin(served, account):
    fn = account.function()
    path = f"{account.base}/ratelimit/functions/{fv(fn)}"
    served.ok("PUT", path, {"rateLimit": RATE}, status=204)
    got = served.ok("GET", f"{account.base}/functions/{fv(fn)}")["function"]
    assert {k: got["rateLimit"][k] for k in RATE} == RATE
    served.ok("DELETE", path, status=204)
    assert "rateLimit" not in served.ok("GET", f"{account.base}/functions/{fv(fn)}")["function"]
    admin_scoped = account.key("admin:update_function")
    served.ok("PUT", path, {"rateLimit": RATE}, status=204, key=admin_scoped)
    served.ok("DELETE", path, status=204, key=admin_scoped)
    plain = account.key("update_function")
    served.problem("PUT", path, {"rateLimit": RATE}, status=403, key=plain)
    served.problem("DELETE", path, status=403, key=plain)
    served.problem("PUT", path, {"rateLimit": {"rateLimit": "10-X"}}, status=400)
    assert served.problem("PUT", path, {}, status=400)["detail"] == "Validation failed: field 'rateLimit' is required"
    mine = served.ok("POST", "/v2/nvcf/functions", FN)["function"]
    served.problem("PUT", f"{account.base}/ratelimit/functions/{fv(mine)}", {"rateLimit": RATE}, status=404)
    served.problem("DELETE", f"{account.base}/ratelimit/functions/{fv(mine)}", status=404)
    served.problem("PUT", path, {"rateLimit": RATE}, status=403, key=Account(served).key("admin:update_function"))


def test_assets_twin_keeps_assets_in_the_path_account(served, account):
    created = served.ok("POST", f"{account.base}/assets", {"contentType": "image/png", "description": "cat"})
    asset_id = created["assetId"]
    put = httpx.put(created["uploadUrl"], content=b"\x89PNG twin", headers={"Content-Type": "image/png"}, timeout=30)
    assert put.status_code == 200, put.text
    assert {"assetId": asset_id} in served.ok("GET", f"{account.base}/assets")["assets"]
    # the installation's own account does not see it, nor reach it by id
    assert {"assetId": asset_id} not in served.ok("GET", "/v2/nvcf/assets")["assets"]
    served.problem("GET", f"/v2/nvcf/assets/{asset_id}", status=404)
    got = served.ok("GET", f"{account.base}/assets/{asset_id}")["asset"]
    assert (got["assetId"], got["contentType"], got["description"]) == (asset_id, "image/png", "cat")
    redirect = served.ok("GET", f"{account.base}/assets/{asset_id}/content-redirect")["presignedUrl"]
    assert httpx.get(redirect, timeout=30).content == b"\x89PNG twin"
    # keys: admin:invoke_function of this account
    admin_scoped = account.key("admin:invoke_function")
    assert {"assetId": asset_id} in served.ok("GET", f"{account.base}/assets", key=admin_scoped)["assets"]
    served.problem("GET", f"{account.base}/assets", status=403, key=account.key("invoke_function"))
    served.problem("GET", f"{account.base}/assets", status=403, key=Account(served).key("admin:invoke_function"))
    p = served.problem("POST", f"{account.base}/assets", {"contentType": "image/png"}, status=400)
    assert p["detail"] == "Validation failed: field 'description' is required"
    served.problem("DELETE", f"/v2/nvcf/assets/{asset_id}", status=404)  # not the installation's asset
    served.ok("DELETE", f"{account.base}/assets/{asset_id}", status=204, key=admin_scoped)
    served.problem("GET", f"{account.base}/assets/{asset_id}", status=404)
    served.problem("DELETE", f"{account.base}/assets/{asset_id}", status=404)
