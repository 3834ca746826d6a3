"""The API-keys service's remaining endpoints against a real `fngate serve` (SQLite and
Redis), with the bodies NVCF's code sends (spec 3.1, 3.3, 3.6): introspection, the
policy evaluation, the service registrations and key-owner status, each with its
success and every error answer. Suspending an owner must stop its keys at the
management API and at the gateway, and ACTIVE must bring them back."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from fngate.control.keys import new_key
from tests.support.keys import INVOCATION_SCOPES, NVCF_SERVICE_ID, WILDCARDS, key_body, key_headers, policy

OTHER_AUD = "some-other-service-id-of-no-interest-to-us-"


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def owner() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@nvcf-api.local"


def make_key(served, who: str, scopes: list[str] | None = None, **body) -> dict:
    return served.ok("POST", "/v1/keys", {**key_body(scopes), **body}, headers=key_headers(who))


def other_account_manager(served) -> str:
    """A manage_keys key of a fresh account (not the installation's own)."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    served.ok("POST", f"/v2/nvcf/accounts/{account}", {"name": "good-name"})
    return make_key(served, owner(), ["manage_keys"], nca_id=account)["value"]


def wait_for_status(served, fid: str, key: str, want: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (got := served.invoke(fid, key).status_code) != want:
        assert time.monotonic() < deadline, f"{what}: the gateway answered {got}, not {want}"
        time.sleep(0.1)


# -- POST /v1/introspect ------------------------------------------------------------------------


def test_introspect_answers_who_owns_the_key_and_what_it_allows(served):
    who = owner()
    created = make_key(served, who)
    resp = served.request("POST", "/v1/introspect", {"audience_service_id": NVCF_SERVICE_ID, "key": created["value"]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "max-age=360"
    assert resp.json() == {
        "owner_type": "USER",
        "owner_id": who,
        "key_id": created["id"],
        "issuer_service_id": NVCF_SERVICE_ID,
        "authorizations": created["authorizations"],
    }


def test_introspect_errors(served):
    who = owner()
    created = make_key(served, who)
    value = created["value"]
    tampered = value[:-1] + ("y" if value.endswith("x") else "x")
    for body, status, detail in (
        ({"audience_service_id": NVCF_SERVICE_ID}, 400, "api key empty"),
        ({"audience_service_id": NVCF_SERVICE_ID, "key": ""}, 400, "api key empty"),
        ({"audience_service_id": NVCF_SERVICE_ID, "key": "sk-123"}, 400, "api key format invalid"),
        ({"audience_service_id": NVCF_SERVICE_ID, "key": tampered}, 400, "Invalid key"),
        ({"audience_service_id": NVCF_SERVICE_ID, "key": new_key()}, 404, "Key not found"),
        ({"audience_service_id": OTHER_AUD, "key": value}, 400, "audience_service_id invalid"),
        ({"key": value}, 400, "audience_service_id invalid"),
        ({"audience_service_id": NVCF_SERVICE_ID, "key": 7}, 400, "Failed to read request: key must be a string"),
    ):
        p = served.problem("POST", "/v1/introspect", body, status=status)
        assert p["detail"] == detail, (body, p)
        assert "cache-control" not in served.request("POST", "/v1/introspect", body).headers
    resp = served.request("POST", "/v1/introspect", headers={"Content-Type": "application/json"}, content=b"{nope")
    assert resp.status_code == 400 and resp.json()["detail"].startswith("Failed to read request")
    # a suspended key, then a deleted one, is "not found"
    issuer = {"Key-Issuer-Id": NVCF_SERVICE_ID}
    served.ok("PUT", f"/v1/service-admin/users/{who}/keys/{created['id']}/status", {"status": "SUSPENDED"}, headers=issuer)
    body = {"audience_service_id": NVCF_SERVICE_ID, "key": value}
    assert served.problem("POST", "/v1/introspect", body, status=404)["detail"] == "Key not found"
    served.ok("DELETE", f"/v1/service-admin/users/{who}/keys/{created['id']}", status=204, headers=issuer)
    assert served.problem("POST", "/v1/introspect", body, status=404)["detail"] == "Key not found"


def test_who_may_introspect(served):
    value = make_key(served, owner())["value"]
    body = {"audience_service_id": NVCF_SERVICE_ID, "key": value}
    assert served.http.post("/v1/introspect", json=body).status_code == 401
    reader = make_key(served, owner(), ["list_functions"])["value"]
    served.problem("POST", "/v1/introspect", body, status=403, key=reader)
    # a manage_keys key of the same account may; one of another account finds nothing
    manager = make_key(served, owner(), ["manage_keys"])["value"]
    assert served.ok("POST", "/v1/introspect", body, key=manager)["owner_id"]
    stranger = other_account_manager(served)
    assert served.problem("POST", "/v1/introspect", body, status=404, key=stranger)["detail"] == "Key not found"


def test_an_expired_key_is_not_found_and_not_allowed(served):
    body = key_body()
    body["expires_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 2))
    value = served.ok("POST", "/v1/keys", body, headers=key_headers(owner()))["value"]
    introspect = {"audience_service_id": NVCF_SERVICE_ID, "key": value}
    assert served.ok("POST", "/v1/introspect", introspect)["owner_id"]
    time.sleep(3.2)
    assert served.problem("POST", "/v1/introspect", introspect, status=404)["detail"] == "Key not found"
    evaluation = served.ok("POST", "/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {"apiKey": value}})
    assert evaluation["result"] == {"allowed": False}


# -- POST /v1/namespaces/{namespace}/evaluations/{policy-name} --------------------------------------


def test_evaluation_returns_the_first_policy_for_the_namespace(served):
    """NVCF's AuthzControllerIntegrationTest: the first policy whose aud is NVCF's wins."""
    who = owner()
    first = {**policy(["invoke_function"]), "policy": "test-policy-one"}
    authorizations = {"policies": [first, {**policy(["deploy_function"]), "aud": OTHER_AUD}, policy(["delete_function"])]}
    created = make_key(served, who, authorizations=authorizations)
    resp = served.request("POST", "/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {"apiKey": created["value"]}})
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "max-age=60"
    assert resp.json() == {
        "namespace": "nvcf",
        "rule_name": "apikey.allow",
        "result": {"allowed": True, "ncaId": created["nca_id"], "ownerId": who, "policy": first},
    }
    # any *.allow rule evaluates the same way
    assert served.ok("POST", "/v1/namespaces/nvcf/evaluations/other-rule.allow", {"input": {"apiKey": created["value"]}})["result"][
        "allowed"
    ]


def test_evaluation_failures_are_allowed_false_with_200(served):
    who = owner()
    good = make_key(served, who)
    other_aud_only = make_key(served, who, authorizations={"policies": [{**policy(INVOCATION_SCOPES), "aud": OTHER_AUD}]})
    deleted = make_key(served, who)
    served.ok("DELETE", f"/v1/keys/{deleted['id']}", status=204, headers=key_headers(who))
    stranger = other_account_manager(served)
    for value, caller in (
        ("nvcfapi-test-non-existing-api-key-value", None),
        (new_key(), None),
        (other_aud_only["value"], None),
        (deleted["value"], None),
        (good["value"], stranger),  # another account's key is unknown to this caller
    ):
        resp = served.request("POST", "/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {"apiKey": value}}, key=caller)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"namespace": "nvcf", "rule_name": "apikey.allow", "result": {"allowed": False}}
        assert resp.headers["cache-control"] == "max-age=60"


def test_evaluation_errors(served):
    value = make_key(served, owner())["value"]
    for path, body, detail in (
        ("/v1/namespaces/nvcf/evaluations/invalid-policy", {"input": {"apiKey": value}}, "Rule name is not supported: invalid-policy"),
        ("/v1/namespaces/nvcf/evaluations/apikey.deny", {"input": {"apiKey": value}}, "Rule name is not supported: apikey.deny"),
        ("/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {}}, "Api key is not provided"),
        ("/v1/namespaces/nvcf/evaluations/apikey.allow", {}, "Api key is not provided"),
        ("/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {"apiKey": ""}}, "Api key is not provided"),
        ("/v1/namespaces/unknown-ns/evaluations/apikey.allow", {"input": {"apiKey": value}}, "Namespace 'unknown-ns' is not configured"),
    ):
        p = served.problem("POST", path, body, status=400)
        assert p["detail"] == detail and p["instance"] == path, p
    body = {"input": {"apiKey": value}}
    assert served.http.post("/v1/namespaces/nvcf/evaluations/apikey.allow", json=body).status_code == 401
    reader = make_key(served, owner(), ["list_functions"])["value"]
    served.problem("POST", "/v1/namespaces/nvcf/evaluations/apikey.allow", body, status=403, key=reader)


# -- GET /v1/services, /v1/services/{service-id} -------------------------------------------------------

NVCF_SERVICE = {
    "service_id": NVCF_SERVICE_ID,
    "service_name": "nvcf-api",
    "audience_service_ids": [NVCF_SERVICE_ID],
    "max_api_keys_per_user": 8,
    "max_api_key_ttl_days": 365,
    "max_authz_size_chars": 2048,
    "min_authz_update_interval_seconds": 3,
}


def test_services(served):
    assert served.ok("GET", "/v1/services") == {"services": [NVCF_SERVICE]}
    assert served.ok("GET", f"/v1/services/{NVCF_SERVICE_ID}") == NVCF_SERVICE
    missing = "nvidia-cloud-tasks-ncp-service-id-nvcttasks"
    assert served.problem("GET", f"/v1/services/{missing}", status=404)["detail"] == f"Service '{missing}' not found"
    manager = make_key(served, owner(), ["manage_keys"])["value"]
    assert served.ok("GET", "/v1/services", key=manager) == {"services": [NVCF_SERVICE]}
    reader = make_key(served, owner(), ["list_functions"])["value"]
    served.problem("GET", "/v1/services", status=403, key=reader)
    served.problem("GET", f"/v1/services/{NVCF_SERVICE_ID}", status=403, key=reader)
    assert served.http.get("/v1/services").status_code == 401


# -- GET /v1/admin/users/{user-id}, PUT .../status ------------------------------------------------------


def test_owner_status_errors(served):
    who = owner()
    make_key(served, who)
    missing = owner()
    assert served.problem("GET", f"/v1/admin/users/{missing}", status=404)["detail"] == "Key owner not found"
    p = served.problem("PUT", f"/v1/admin/users/{missing}/status", {"status": "SUSPENDED"}, status=404)
    assert p["detail"] == "Key owner not found"
    assert served.problem("GET", "/v1/admin/users/fngate-admin", status=404)["detail"] == "Key owner not found"  # the admin key's
    assert served.problem("PUT", f"/v1/admin/users/{who}/status", {}, status=400)["detail"] == "status is required parameter"
    p = served.problem("PUT", f"/v1/admin/users/{who}/status", {"status": "EXPIRED"}, status=400)
    assert p["detail"].startswith("Failed to read request")
    manager = make_key(served, owner(), ["manage_keys"])["value"]
    served.problem("GET", f"/v1/admin/users/{who}", status=403, key=manager)
    served.problem("PUT", f"/v1/admin/users/{who}/status", {"status": "SUSPENDED"}, status=403, key=manager)
    assert served.http.get(f"/v1/admin/users/{who}").status_code == 401
    assert served.ok("GET", f"/v1/admin/users/{who}")["status"] == "ACTIVE"  # nothing changed


def test_suspending_an_owner_stops_every_key_it_owns_and_active_restores_them(served):
    fn = served.ok(
        "POST",
        "/v2/nvcf/functions",
        {"name": "owner-echo", "inferenceUrl": "/echo", "inferencePort": 8000, "containerImage": "fngate/echo", "healthUri": "/health"},
    )["function"]
    spec = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1}
    served.ok("POST", f"/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}", {"deploymentSpecifications": [spec]})
    who, bystander = owner(), owner()
    a = served.ok("POST", "/v1/keys", key_body([*INVOCATION_SCOPES, "manage_keys"], WILDCARDS), headers=key_headers(who))
    b = make_key(served, who)
    other = make_key(served, bystander)
    got = served.ok("GET", f"/v1/admin/users/{who}")
    assert got == {"owner_type": "USER", "owner_id": who, "status": "ACTIVE", "status_updated_at": got["status_updated_at"]}
    assert instant(got["status_updated_at"]) <= instant(a["created_at"]) and got["status_updated_at"].endswith("Z")
    wait_for_status(served, fn["id"], a["value"], 200, "a new key")  # snapshot, then a cold start

    suspended = served.ok("PUT", f"/v1/admin/users/{who}/status", {"status": "SUSPENDED"})
    assert (suspended["owner_id"], suspended["status"]) == (who, "SUSPENDED")
    assert instant(suspended["status_updated_at"]) > instant(got["status_updated_at"])
    assert served.ok("GET", f"/v1/admin/users/{who}") == suspended
    for key in (a["value"], b["value"]):
        assert served.problem("GET", "/v2/nvcf/functions", status=403, key=key)["detail"] == "Authorization failed"
    p = served.problem("GET", "/v1/keys", status=403, headers=key_headers(who))
    assert p["detail"] == "Key owner suspended."
    served.problem("POST", "/v1/keys", key_body(), status=403, headers=key_headers(who))
    introspect = {"audience_service_id": NVCF_SERVICE_ID, "key": a["value"]}
    assert served.problem("POST", "/v1/introspect", introspect, status=404)["detail"] == "Key not found."
    evaluation = served.ok("POST", "/v1/namespaces/nvcf/evaluations/apikey.allow", {"input": {"apiKey": a["value"]}})
    assert evaluation["result"] == {"allowed": False}
    wait_for_status(served, fn["id"], a["value"], 401, "a suspended owner's key", timeout=10)  # gone from the snapshot
    assert served.invoke(fn["id"], b["value"]).status_code == 401
    # the keys themselves are untouched, and another owner's key still works
    assert {k["status"] for k in served.ok("GET", f"/v1/admin/users/{who}/keys")["keys"]} == {"ACTIVE"}
    assert served.invoke(fn["id"], other["value"]).status_code == 200

    restored = served.ok("PUT", f"/v1/admin/users/{who}/status", {"status": "ACTIVE"})
    assert restored["status"] == "ACTIVE"
    assert "functions" in served.ok("GET", "/v2/nvcf/functions", key=a["value"])
    assert served.ok("GET", "/v1/keys", headers=key_headers(who))["keys"]
    assert served.ok("POST", "/v1/introspect", introspect)["key_id"] == a["id"]
    wait_for_status(served, fn["id"], b["value"], 200, "a restored owner's key", timeout=30)
