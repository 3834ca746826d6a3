"""/v1/keys against a real `fngate serve` (SQLite and Redis), with the request bodies of
NVCF's docs (spec 3.1-3.4): every endpoint, its success and each of its error answers."""

from __future__ import annotations

import re
import time
import uuid

import httpx

from tests.support.keys import INVOCATION_SCOPES, NVCF_SERVICE_ID, WILDCARDS, function_resource, in_days, key_body, key_headers

KEY_RE = re.compile(r"^nvapi-nvcf-stg-[A-Za-z0-9_-]{64}$")
MASKED_RE = re.compile(r"^nvapi-nvcf-stg-\*{10}[A-Za-z0-9_-]{3}$")
KEY_FIELDS = {
    "id",
    "value",
    "status",
    "owner_type",
    "owner_id",
    "issuer_service_id",
    "audience_service_ids",
    "description",
    "created_at",
    "expires_at",
}


def owner() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@nvcf-api.local"


def test_create_with_the_docs_body_returns_the_flat_key_once(served):
    who = owner()
    body = key_body()
    created = served.ok("POST", "/v1/keys", body, headers=key_headers(who))
    assert KEY_FIELDS | {"authorizations", "nca_id"} == set(created)
    assert KEY_RE.match(created["value"]) and created["status"] == "ACTIVE"
    assert (created["owner_type"], created["owner_id"], created["issuer_service_id"]) == ("USER", who, NVCF_SERVICE_ID)
    assert created["audience_service_ids"] == [NVCF_SERVICE_ID] and created["description"] == "invocation key"
    assert created["authorizations"] == body["authorizations"]
    assert created["created_at"].endswith("Z") and created["expires_at"] == body["expires_at"].replace(".000Z", "Z")
    # the key works, shown masked from now on
    assert "functions" in served.ok("GET", "/v2/nvcf/functions", key=created["value"])
    got = served.ok("GET", f"/v1/keys/{created['id']}", headers=key_headers(who))
    assert MASKED_RE.match(got["value"]) and got["value"].endswith(created["value"][-3:])
    assert created["value"] not in served.sp.output()
    # audience_service_ids may be left out (the issuer's own id)
    del body["audience_service_ids"]
    assert served.ok("POST", "/v1/keys", body, headers=key_headers(who))["audience_service_ids"] == [NVCF_SERVICE_ID]


def test_create_errors(served):
    who = owner()
    good = key_body()
    no_owner = {k: v for k, v in key_headers(who).items() if k != "Key-Owner-Id"}
    no_issuer = {k: v for k, v in key_headers(who).items() if k != "Key-Issuer-Id"}
    cases = [
        (good, no_owner, "Key-Owner-Id is not set"),
        (good, no_issuer, "Key-Issuer-Id is not set"),
        (good, {**key_headers(who), "Key-Issuer-Id": "nvidia-cloud-tasks-ncp-service-id-nvcttasks"}, "Caller service not registered"),
        ({**good, "description": "no/slashes"}, None, "description is invalid"),
        ({**good, "description": "x" * 65}, None, "description is invalid"),
        ({k: v for k, v in good.items() if k != "description"}, None, "description is invalid"),
        (
            {k: v for k, v in good.items() if k != "expires_at"},
            None,
            "expires_at must be in the future and not more than 365 days from now",
        ),
        ({**good, "expires_at": in_days(-1)}, None, "expires_at must be in the future and not more than 365 days from now"),
        ({**good, "expires_at": in_days(366)}, None, "expires_at must be in the future and not more than 365 days from now"),
        ({**good, "audience_service_ids": []}, None, "audience_service_ids can't be empty"),
        ({**good, "audience_service_ids": ["zzz", NVCF_SERVICE_ID]}, None, f"service '{NVCF_SERVICE_ID}' cannot use audiences: zzz"),
        ({k: v for k, v in good.items() if k != "authorizations"}, None, "authorizations can not be null"),
        ({**good, "authorizations": None}, None, "authorizations can not be null"),
    ]
    big = key_body(resources=[function_resource(str(uuid.uuid4())) for _ in range(40)])
    cases.append((big, None, None))
    for body, headers, detail in cases:
        p = served.problem("POST", "/v1/keys", body, status=400, headers=headers or key_headers(who))
        if detail is None:
            assert re.fullmatch(r"authorizations size can not be greater than 2048 but was \d+", p["detail"]), p
        else:
            assert p["detail"] == detail, (body, p)
    resp = served.request("POST", "/v1/keys", headers={**key_headers(who), "Content-Type": "application/json"}, content=b"{not json")
    assert resp.status_code == 400 and resp.json()["detail"].startswith("Failed to read request")
    assert served.ok("GET", "/v1/keys", headers=key_headers(who))["keys"] == []  # nothing was created


def test_at_most_eight_keys_per_owner(served):
    who = owner()
    for _ in range(8):
        served.ok("POST", "/v1/keys", key_body(), headers=key_headers(who))
    p = served.problem("POST", "/v1/keys", key_body(), status=400, headers=key_headers(who))
    assert p["detail"] == "Actor reached maximum allowed number of keys in service"
    served.ok("POST", "/v1/keys", key_body(), headers=key_headers(owner()))  # another owner is not affected


def test_auth_on_the_keys_endpoints(served):
    resp = served.http.post("/v1/keys", json=key_body(), headers=key_headers())
    assert resp.status_code == 401
    reader = served.ok("POST", "/v1/keys", key_body(["list_functions"]), headers=key_headers(owner()))["value"]
    for method, path in (
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("GET", "/v1/keys/x"),
        ("PUT", "/v1/keys/x/authorizations"),
        ("DELETE", "/v1/keys/x"),
    ):
        served.problem(method, path, key_body(), status=403, key=reader, headers=key_headers())


def test_manage_keys_cannot_escalate(served):
    """Regression: a key holding manage_keys minted keys with any scope."""
    who = owner()
    manager = served.ok("POST", "/v1/keys", key_body(["manage_keys", "list_functions"]), headers=key_headers(who))["value"]
    p = served.problem(
        "POST", "/v1/keys", key_body(["deploy_function", "delete_function"]), status=403, key=manager, headers=key_headers(who)
    )
    assert "deploy_function" in p["detail"] and "exceeds the calling key" in p["detail"]
    fn = served.ok("POST", "/v2/nvcf/functions", {"name": "esc", "inferenceUrl": "/", "containerImage": "img"})["function"]
    served.problem(
        "POST",
        f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}",
        {"deploymentSpecifications": []},
        status=403,
        key=manager,
    )
    child = served.ok("POST", "/v1/keys", key_body(["list_functions"]), key=manager, headers=key_headers(who))
    p = served.problem(
        "PUT",
        f"/v1/keys/{child['id']}/authorizations",
        {"authorizations": key_body(["manage_keys", "deploy_function"])["authorizations"]},
        status=403,
        key=manager,
        headers=key_headers(who),
    )
    assert "deploy_function" in p["detail"]
    assert served.ok("GET", f"/v1/keys/{child['id']}", headers=key_headers(who))["authorizations"]["policies"][0]["scopes"] == [
        "list_functions"
    ]


def test_list_is_per_owner_masked_and_without_authorizations(served):
    who = owner()
    a = served.ok("POST", "/v1/keys", key_body(description="first key"), headers=key_headers(who))
    b = served.ok("POST", "/v1/keys", key_body(description="second key"), headers=key_headers(who))
    served.ok("POST", "/v1/keys", key_body(), headers=key_headers(owner()))
    listed = served.ok("GET", "/v1/keys", headers=key_headers(who))["keys"]
    assert sorted(k["id"] for k in listed) == sorted([a["id"], b["id"]])
    assert all(set(k) == KEY_FIELDS | {"nca_id"} and MASKED_RE.match(k["value"]) for k in listed)
    assert served.problem("GET", "/v1/keys", status=400, headers={"Key-Issuer-Id": NVCF_SERVICE_ID})["detail"] == "Key-Owner-Id is not set"


def test_get_and_its_errors(served):
    who = owner()
    created = served.ok("POST", "/v1/keys", key_body(), headers=key_headers(who))
    got = served.ok("GET", f"/v1/keys/{created['id']}", headers=key_headers(who))
    assert {k: v for k, v in got.items() if k != "value"} == {k: v for k, v in created.items() if k != "value"}
    assert served.problem("GET", f"/v1/keys/{uuid.uuid4()}", status=404, headers=key_headers(who))["detail"] == "Key not found"
    served.problem("GET", f"/v1/keys/{created['id']}", status=404, headers=key_headers(owner()))  # another owner's
    served.problem("GET", f"/v1/keys/{created['id']}", status=400, headers={"Key-Owner-Id": who})


def test_update_authorizations(served):
    who = owner()
    fn = served.ok("POST", "/v2/nvcf/functions", {"name": "upd", "inferenceUrl": "/", "containerImage": "img"})["function"]
    created = served.ok("POST", "/v1/keys", key_body(), headers=key_headers(who))
    path = f"/v1/keys/{created['id']}/authorizations"
    narrow = key_body(["list_functions"], [function_resource(fn["id"], fn["versionId"])])["authorizations"]
    updated = served.ok("PUT", path, {"authorizations": narrow}, headers=key_headers(who))
    assert served.problem("PUT", path, {"authorizations": narrow}, status=429, headers=key_headers(who))["detail"] == "Slow down."
    assert updated["authorizations"] == narrow and updated["id"] == created["id"] and MASKED_RE.match(updated["value"])
    # the change takes effect: only that version now, and no queue_details
    key = created["value"]
    assert [f["id"] for f in served.ok("GET", "/v2/nvcf/functions", key=key)["functions"]] == [fn["id"]]
    served.problem("GET", f"/v2/nvcf/queues/functions/{fn['id']}", status=403, key=key)
    assert served.problem("PUT", path, {"authorizations": narrow}, status=429, headers=key_headers(who))["detail"] == "Slow down."
    assert (
        served.problem("PUT", path, {"authorizations": None}, status=400, headers=key_headers(who))["detail"]
        == "authorizations can not be null"
    )
    assert served.problem("PUT", path, {}, status=400, headers=key_headers(who))["detail"] == "authorizations can not be null"
    served.problem("PUT", f"/v1/keys/{uuid.uuid4()}/authorizations", {"authorizations": narrow}, status=404, headers=key_headers(who))


def test_expiry_is_computed_and_an_expired_key_cannot_be_updated(served):
    who = owner()
    body = key_body()
    body["expires_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3))
    created = served.ok("POST", "/v1/keys", body, headers=key_headers(who))
    assert served.ok("GET", "/v2/nvcf/functions", key=created["value"]) is not None
    time.sleep(4.2)
    assert served.ok("GET", f"/v1/keys/{created['id']}", headers=key_headers(who))["status"] == "EXPIRED"
    p = served.problem(
        "PUT", f"/v1/keys/{created['id']}/authorizations", {"authorizations": body["authorizations"]}, status=400, headers=key_headers(who)
    )
    assert p["detail"] == "Key is not active"
    assert served.problem("GET", "/v2/nvcf/functions", status=403, key=created["value"])["detail"] == "Authorization failed"
    assert served.invoke(str(uuid.uuid4()), created["value"]).status_code == 401


def test_delete(served):
    who = owner()
    created = served.ok("POST", "/v1/keys", key_body(), headers=key_headers(who))
    served.ok("DELETE", f"/v1/keys/{created['id']}", status=204, headers=key_headers(who))
    assert served.problem("DELETE", f"/v1/keys/{created['id']}", status=404, headers=key_headers(who))["detail"] == "Key not found"
    served.problem("GET", "/v2/nvcf/functions", status=403, key=created["value"])
    served.problem("DELETE", "/v1/keys/admin", status=400, headers=key_headers("fngate-admin"))


def test_a_new_key_invokes_through_the_gateway_until_deleted(served):
    """The gateway learns keys from the routing snapshot: the new format works there, a
    key limited to another function is refused, and a deleted key stops at once."""
    fn = served.ok(
        "POST",
        "/v2/nvcf/functions",
        {"name": "keyed-echo", "inferenceUrl": "/echo", "inferencePort": 8000, "containerImage": "fngate/echo", "healthUri": "/health"},
    )["function"]
    spec = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1}
    served.ok("POST", f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}", {"deploymentSpecifications": [spec]})
    who = owner()
    key = served.ok("POST", "/v1/keys", key_body(INVOCATION_SCOPES, WILDCARDS), headers=key_headers(who))
    other = served.ok("POST", "/v1/keys", key_body(INVOCATION_SCOPES, [function_resource(str(uuid.uuid4()))]), headers=key_headers(who))
    pinned = served.ok(
        "POST", "/v1/keys", key_body(INVOCATION_SCOPES, [function_resource(fn["id"], fn["versionId"])]), headers=key_headers(who)
    )
    deadline = time.monotonic() + 60
    while True:  # the snapshot reaches the gateway a moment after the write
        r = served.invoke(fn["id"], key["value"], content=b"hello")
        if r.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    assert r.headers["nvcf-status"] == "fulfilled"
    r = served.invoke(fn["id"], other["value"])
    assert r.status_code == 403 and r.json()["detail"] == f"Function '{fn['id']}':  Missing resource entry in ApiKey for the function"
    assert served.invoke(fn["id"], pinned["value"]).status_code == 403  # not pinned: needs the whole function
    r = served.invoke(fn["id"], pinned["value"], headers={"function-version-id": fn["versionId"]})
    assert r.status_code == 200, r.text
    served.ok("DELETE", f"/v1/keys/{key['id']}", status=204, headers=key_headers(who))
    deadline = time.monotonic() + 10
    while served.invoke(fn["id"], key["value"]).status_code != 401:
        assert time.monotonic() < deadline, "a deleted key kept working"
        time.sleep(0.1)


def test_service_admin_suspend_reactivate_and_lookup(served):
    who = owner()
    created = served.ok("POST", "/v1/keys", key_body(), headers=key_headers(who))
    other = served.ok("POST", "/v1/keys", key_body(), headers=key_headers(who))
    issuer = {"Key-Issuer-Id": NVCF_SERVICE_ID}
    base = f"/v1/service-admin/users/{who}/keys"
    assert sorted(k["id"] for k in served.ok("GET", base, headers=issuer)["keys"]) == sorted([created["id"], other["id"]])
    assert served.ok("GET", f"{base}/{created['id']}", headers=issuer)["authorizations"] == created["authorizations"]
    suspended = served.ok("PUT", f"{base}/{created['id']}/status", {"status": "SUSPENDED"}, headers=issuer)
    assert suspended["status"] == "SUSPENDED"
    served.problem("GET", "/v2/nvcf/functions", status=403, key=created["value"])
    deadline = time.monotonic() + 10
    while served.invoke(str(uuid.uuid4()), created["value"]).status_code != 401:  # the gateway drops it from its snapshot
        assert time.monotonic() < deadline, "a suspended key kept working at the gateway"
        time.sleep(0.1)
    assert served.problem("PUT", f"{base}/{created['id']}/status", {"status": "SUSPENDED"}, status=400, headers=issuer)["detail"] == (
        "Invalid status transition"
    )
    assert (
        served.problem("PUT", f"{base}/{created['id']}/status", {}, status=400, headers=issuer)["detail"] == "status is required parameter"
    )
    p = served.problem(
        "PUT",
        f"/v1/keys/{created['id']}/authorizations",
        {"authorizations": created["authorizations"]},
        status=400,
        headers=key_headers(who),
    )
    assert p["detail"] == "Key is not active"
    assert served.ok("PUT", f"{base}/{created['id']}/status", {"status": "ACTIVE"}, headers=issuer)["status"] == "ACTIVE"
    assert "functions" in served.ok("GET", "/v2/nvcf/functions", key=created["value"])
    # lookup by value
    found = served.ok("POST", "/v1/admin/lookup", {"key": created["value"]})
    assert found["id"] == created["id"] and "authorizations" not in found and MASKED_RE.match(found["value"])
    for value, detail in (
        ("", "api key empty"),
        ("sk-123", "api key format invalid"),
        (created["value"][:-1] + ("y" if created["value"].endswith("x") else "x"), "Invalid key"),
    ):
        assert served.problem("POST", "/v1/admin/lookup", {"key": value}, status=400)["detail"] == detail
    # suspend all of the user's keys at once, then delete them all
    assert {k["status"] for k in served.ok("PUT", f"/v1/service-admin/users/{who}/suspend", headers=issuer)["keys"]} == {"SUSPENDED"}
    served.problem("GET", "/v2/nvcf/functions", status=403, key=other["value"])
    assert len(served.ok("GET", f"/v1/admin/users/{who}/keys")["keys"]) == 2
    served.ok("DELETE", f"{base}/{other['id']}", status=204, headers=issuer)
    served.problem("GET", f"{base}/{other['id']}", status=404, headers=issuer)
    served.ok("DELETE", f"/v1/admin/users/{who}/keys", status=204)
    assert served.ok("GET", f"/v1/admin/users/{who}/keys")["keys"] == []
    # only the admin key, and the issuer header
    manager = served.ok("POST", "/v1/keys", key_body(["manage_keys"]), headers=key_headers(owner()))["value"]
    served.problem("GET", base, status=403, key=manager, headers=issuer)
    assert served.problem("GET", base, status=400)["detail"] == "Key-Issuer-Id is not set"


def test_a_key_pinned_to_a_version_polls_its_pexec_request(served):
    fn = served.ok(
        "POST",
        "/v2/nvcf/functions",
        {"name": "pexec-echo", "inferenceUrl": "/echo", "inferencePort": 8000, "containerImage": "fngate/echo", "healthUri": "/health"},
    )["function"]
    spec = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1}
    served.ok("POST", f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}", {"deploymentSpecifications": [spec]})
    pinned = served.ok(
        "POST", "/v1/keys", key_body(INVOCATION_SCOPES, [function_resource(fn["id"], fn["versionId"])]), headers=key_headers(owner())
    )
    deadline = time.monotonic() + 60
    while served.invoke(fn["id"], pinned["value"], headers={"function-version-id": fn["versionId"]}).status_code != 200:
        assert time.monotonic() < deadline, "the pinned key never invoked its version"  # snapshot, then a cold start
        time.sleep(0.1)
    headers = {"Authorization": f"Bearer {pinned['value']}", "NVCF-POLL-SECONDS": "1", "Echo-Delay": "4"}
    url = f"{served.gateway}/v2/nvcf/pexec/functions/{fn['id']}/versions/{fn['versionId']}"
    r = httpx.post(url, headers=headers, content=b"{}", timeout=30)
    assert r.status_code == 202, r.text
    status = f"{served.gateway}/v2/nvcf/pexec/status/{r.headers['nvcf-reqid']}"
    while (r := httpx.get(status, headers=headers, timeout=30)).status_code == 202:
        assert time.monotonic() < deadline + 30
    assert r.status_code == 200, r.text
