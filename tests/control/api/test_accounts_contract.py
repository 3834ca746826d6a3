"""/v2/nvcf/accounts (spec 11.1) and the `/v2/nvcf/accounts/{ncaId}/...` twins (11.2,
3.8) against a real `fngate serve` (SQLite and Redis)."""

from __future__ import annotations

import uuid

from tests.support.keys import INVOCATION_SCOPES, WILDCARDS, key_body, key_headers

FN = {"name": "acct-fn", "inferenceUrl": "/", "containerImage": "fngate/echo"}  # an image the local catalog has: deploys are checked
SPEC = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1}


def nca() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def key_for(served, account: str, scopes: list[str]) -> str:
    body = {**key_body(scopes, WILDCARDS), "nca_id": account}
    return served.ok("POST", "/v1/keys", body, headers=key_headers(f"{uuid.uuid4().hex[:6]}@{account}"))["value"]


def test_create_get_list_update_delete(served):
    account = nca()
    created = served.ok(
        "POST", f"/v2/nvcf/accounts/{account}", {"name": "team-alpha", "maxFunctionsAllowed": 5, "adminClientId": "client-1"}
    )
    doc = created["account"]
    assert (doc["ncaId"], doc["name"], doc["adminClientIds"], doc["maxFunctionsAllowed"]) == (account, "team-alpha", ["client-1"], 5)
    assert (doc["maxTasksAllowed"], doc["maxTelemetriesAllowed"], doc["maxRegistryCredentialsAllowed"]) == (50, 25, 25)
    listed = served.ok("GET", "/v2/nvcf/accounts")["cloudAccounts"]
    assert {"fngate", account} <= {a["ncaId"] for a in listed}
    details = served.ok("GET", f"/v2/nvcf/accounts/{account}")["account"]
    assert details["currentNumberFunctions"] == 0 and details["clientIds"] == ["client-1"] and details["telemetries"] == []
    updated = served.ok("PATCH", f"/v2/nvcf/accounts/{account}", {"name": "team-beta", "maxFunctionsAllowed": 0})["account"]
    assert (updated["name"], updated["maxFunctionsAllowed"]) == ("team-beta", 0)
    assert served.ok("PATCH", f"/v2/nvcf/accounts/{account}/clients/associate", {"adminClientId": "client-2"})["account"][
        "adminClientIds"
    ] == [
        "client-1",
        "client-2",
    ]
    assert served.ok("PATCH", f"/v2/nvcf/accounts/{account}/clients/disassociate", {"adminClientId": "client-1"})["account"][
        "adminClientIds"
    ] == ["client-2"]
    assert served.ok("GET", "/v2/nvcf/clients/client-2") == {"client": {"clientId": "client-2", "ncaId": account, "name": "team-beta"}}
    assert (
        served.problem("GET", "/v2/nvcf/clients/client-1", status=404)["detail"]
        == "Client 'client-1' is not found and may not be onboarded yet"
    )
    served.ok("DELETE", f"/v2/nvcf/accounts/{account}", status=204)
    served.problem("GET", f"/v2/nvcf/accounts/{account}", status=404)
    served.problem("GET", "/v2/nvcf/clients/client-2", status=404)


def test_account_errors(served):
    account = nca()
    for body, detail in (
        ({}, "Invalid account name: must not be blank"),
        ({"name": "abc"}, "Invalid account name: Must be 4 - 36 characters long"),
        ({"name": "-bad-start"}, "Invalid account name: Must conform to regex ^[a-z0-9A-Z][a-z0-9A-Z\\-_]*$"),
        ({"name": "good-name", "maxFunctionsAllowed": 0}, "Validation failed: field 'maxFunctionsAllowed' must be at least 1"),
        ({"name": "good-name", "maxTelemetriesAllowed": 26}, "Validation failed: field 'maxTelemetriesAllowed' must be at most 25"),
    ):
        assert served.problem("POST", f"/v2/nvcf/accounts/{account}", body, status=400)["detail"] == detail
    p = served.problem("POST", "/v2/nvcf/accounts/-x", {"name": "good-name"}, status=400)
    assert p["detail"] == "Invalid request: ncaId should start with alphanumeric character"
    served.ok("POST", f"/v2/nvcf/accounts/{account}", {"name": "good-name"})
    assert served.problem("POST", f"/v2/nvcf/accounts/{account}", {"name": "good-name"}, status=409)["detail"] == (
        f"Account with ncaId '{account}' already exists"
    )
    p = served.problem("PATCH", f"/v2/nvcf/accounts/{account}", {"name": " "}, status=400)
    assert p["detail"] == "Invalid request: Either name, credential fields or limits should be specified"
    p = served.problem("PATCH", f"/v2/nvcf/accounts/{account}", {"maxTelemetriesAllowed": 51}, status=400)
    assert "maxTelemetriesAllowed" in p["detail"]
    p = served.problem("PATCH", f"/v2/nvcf/accounts/{account}/clients/disassociate", {"adminClientId": "nope"}, status=400)
    assert p["detail"] == f"Client 'nope' is not associated with NVIDIA Cloud Account '{account}'"
    missing = nca()
    for method, path, body in (
        ("GET", f"/v2/nvcf/accounts/{missing}", None),
        ("PATCH", f"/v2/nvcf/accounts/{missing}", {"name": "good-name"}),
        ("DELETE", f"/v2/nvcf/accounts/{missing}", None),
    ):
        assert served.problem(method, path, body, status=404)["detail"] == f"Account with ncaId '{missing}' not found"
    # an account with functions stays; the installation's own account always stays
    served.ok("POST", "/v2/nvcf/accounts/" + account + "/functions", FN)
    assert served.problem("DELETE", f"/v2/nvcf/accounts/{account}", status=400)["detail"] == (
        f"Account '{account}': Cannot delete account with functions defined"
    )
    served.problem("DELETE", "/v2/nvcf/accounts/fngate", status=400)


def test_account_setup_keys(served):
    account = nca()
    served.ok("POST", f"/v2/nvcf/accounts/{account}", {"name": "good-name"})
    setup = key_for(served, account, ["account_setup"])
    assert [a["ncaId"] for a in served.ok("GET", "/v2/nvcf/accounts", key=setup)["cloudAccounts"]] == [account]
    served.ok("PATCH", f"/v2/nvcf/accounts/{account}", {"maxFunctionsAllowed": 3}, key=setup)
    served.problem("GET", "/v2/nvcf/accounts/fngate", status=404, key=setup)  # fngate: only its own account
    served.problem("POST", f"/v2/nvcf/accounts/{nca()}", {"name": "good-name"}, status=403, key=setup)  # JWT only
    served.problem("DELETE", f"/v2/nvcf/accounts/{account}", status=403, key=setup)
    reader = key_for(served, account, ["list_functions"])
    served.problem("GET", "/v2/nvcf/accounts", status=403, key=reader)


def test_keys_belong_to_an_account(served):
    account = nca()
    p = served.problem("POST", "/v1/keys", {**key_body(), "nca_id": account}, status=400, headers=key_headers())
    assert p["detail"] == f"Account with ncaId '{account}' not found"
    served.ok("POST", f"/v2/nvcf/accounts/{account}", {"name": "good-name"})
    manager = key_for(served, account, ["manage_keys", "list_functions"])
    p = served.problem(
        "POST", "/v1/keys", {**key_body(["list_functions"]), "nca_id": "fngate"}, status=403, key=manager, headers=key_headers()
    )
    assert "account 'fngate'" in p["detail"]
    child = served.ok("POST", "/v1/keys", key_body(["list_functions"]), key=manager, headers=key_headers("child@x"))
    assert child["nca_id"] == account
    # functions belong to the account that created them
    mine = served.ok("POST", "/v2/nvcf/accounts/" + account + "/functions", FN)["function"]
    assert mine["ncaId"] == account
    assert [f["id"] for f in served.ok("GET", "/v2/nvcf/functions", key=child["value"])["functions"]] == [mine["id"]]
    assert mine["id"] not in served.ok("GET", "/v2/nvcf/functions/ids")["functionIds"]  # not the admin's own account
    assert served.ok("GET", f"/v2/nvcf/accounts/{account}")["account"]["currentNumberFunctions"] == 1
    # deleting the account (once it has no functions) deletes its keys
    served.ok("DELETE", f"/v2/nvcf/accounts/{account}/functions/{mine['id']}/versions/{mine['versionId']}", status=204)
    served.ok("DELETE", f"/v2/nvcf/accounts/{account}", status=204)
    served.problem("GET", "/v2/nvcf/functions", status=403, key=child["value"])


def test_super_admin_twins(served):
    account = nca()
    served.ok("POST", f"/v2/nvcf/accounts/{account}", {"name": "good-name"})
    base = f"/v2/nvcf/accounts/{account}"
    fn = served.ok("POST", f"{base}/functions", FN)["function"]
    fv = f"{fn['id']}/versions/{fn['versionId']}"
    # what NVCF's k6 list test and UI call
    assert [f["id"] for f in served.ok("GET", f"{base}/functions?visibility=private")["functions"]] == [fn["id"]]
    assert served.ok("GET", f"{base}/functions/{fv}?includeSecrets=false")["function"]["id"] == fn["id"]
    dep = served.ok("POST", f"{base}/deployments/functions/{fv}", {"deploymentSpecifications": [SPEC]})["deployment"]
    assert served.ok("GET", f"{base}/deployments/functions/{fv}")["deployment"]["deploymentId"] == dep["deploymentId"]
    assert [d["deploymentId"] for d in served.ok("GET", f"{base}/deployments")["deployments"]] == [dep["deploymentId"]]
    assert served.ok("GET", f"{base}/queues/functions/{fn['id']}")["functionId"] == fn["id"]
    # another account's function is not found through this account's twin
    other = served.ok("POST", "/v2/nvcf/functions", FN)["function"]
    served.problem("GET", f"{base}/functions/{other['id']}/versions/{other['versionId']}", status=404)
    # keys: admin:<scope> and the key's own account (spec 3.8)
    plain = key_for(served, account, [*INVOCATION_SCOPES])
    p = served.problem("GET", f"{base}/functions", status=403, key=plain)
    assert "admin:list_functions" in p["detail"]
    admin_scoped = key_for(served, account, ["admin:list_functions", "admin:deploy_function"])
    assert [f["id"] for f in served.ok("GET", f"{base}/functions", key=admin_scoped)["functions"]] == [fn["id"]]
    assert served.ok("GET", f"{base}/deployments", key=admin_scoped)["deployments"]
    served.problem("GET", "/v2/nvcf/accounts/fngate/functions", status=403, key=admin_scoped)
    served.problem("GET", f"/v2/nvcf/accounts/{nca()}/functions", status=404)


def test_max_functions_allowed(served):
    account = nca()
    served.ok("POST", f"/v2/nvcf/accounts/{account}", {"name": "good-name", "maxFunctionsAllowed": 1})
    fn = served.ok("POST", f"/v2/nvcf/accounts/{account}/functions", FN)["function"]
    p = served.problem("POST", f"/v2/nvcf/accounts/{account}/functions", FN, status=400)
    assert p["detail"] == (
        f"Account '{account}': Reached or exceeded the max limit for the number of functions allowed: 1. "
        "Please contact your account team for more details"
    )
    served.ok("POST", f"/v2/nvcf/accounts/{account}/functions/{fn['id']}/versions", FN)  # a version is not a new function
    served.ok("PATCH", f"/v2/nvcf/accounts/{account}", {"maxFunctionsAllowed": 0})
    served.problem("POST", f"/v2/nvcf/accounts/{account}/functions", FN, status=400)
