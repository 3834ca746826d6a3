"""Authorized parties (spec 5) against a real `fngate serve` (SQLite and Redis): the
endpoints with their validation, what a shared account may and may not do at the
management API, `visibility`, and the gateway's answers through the routing snapshot."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.keys import INVOCATION_SCOPES, WILDCARDS, key_body, key_headers

ECHO = {"name": "shared-echo", "inferenceUrl": "/echo", "inferencePort": 8000, "containerImage": "fngate/echo", "healthUri": "/health"}
SPEC = {"gpu": "L40S", "instanceType": "NCP.GPU.L40S_1x", "minInstances": 0, "maxInstances": 1}
AZ = "/v2/nvcf/authorizations/functions"


class World:
    def __init__(self, served) -> None:
        self.s = served
        suffix = uuid.uuid4().hex[:6]
        self.b, self.c = f"team-b-{suffix}", f"team-c-{suffix}"
        for nca in (self.b, self.c):
            served.ok("POST", f"/v2/nvcf/accounts/{nca}", {"name": nca})
        served.ok("PATCH", f"/v2/nvcf/accounts/{self.c}/clients/associate", {"adminClientId": f"client-of-c-{suffix}"})
        self.client_of_c = f"client-of-c-{suffix}"
        fn = served.ok("POST", "/v2/nvcf/functions", ECHO)["function"]
        self.fid, self.vid = fn["id"], fn["versionId"]
        self.vid2 = served.ok("POST", f"/v2/nvcf/functions/{self.fid}/versions", ECHO)["function"]["versionId"]
        for vid in (self.vid, self.vid2):
            served.ok("POST", f"/v2/nvcf/deployments/functions/{self.fid}/versions/{vid}", {"deploymentSpecifications": [SPEC]})
        scopes = [
            *INVOCATION_SCOPES,
            "register_function",
            "update_function",
            "delete_function",
            "deploy_function",
            "authorize_clients",
            "update_secrets",
        ]
        self.key_b = self.key(self.b, scopes, WILDCARDS)
        self.key_c = self.key(self.c, scopes, WILDCARDS)
        self.key_b_own_only = self.key(self.b, INVOCATION_SCOPES, [{"id": "*", "type": "account-functions"}])

    def key(self, nca: str, scopes: list[str], resources: list[dict]) -> str:
        body = {**key_body(scopes, resources), "nca_id": nca}
        created = self.s.ok("POST", "/v1/keys", body, headers=key_headers(f"{uuid.uuid4().hex[:8]}@{nca}"))
        assert created["nca_id"] == nca
        return created["value"]

    def invoke(self, key: str, vid: str | None = None) -> int:
        headers = {"function-version-id": vid} if vid else {}
        return self.s.invoke(self.fid, key, headers=headers, content=b"hi").status_code

    def until(self, key: str, status: int, vid: str | None = None) -> None:
        """The gateway sees a change a moment after the API answers (the snapshot)."""
        deadline = time.monotonic() + 30
        while (got := self.invoke(key, vid)) != status:
            assert time.monotonic() < deadline, f"gateway answered {got}, wanted {status}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def world(served):
    return World(served)


def test_before_sharing_another_account_sees_nothing(served, world):
    assert world.fid not in served.ok("GET", "/v2/nvcf/functions/ids", key=world.key_b)["functionIds"]
    p = served.problem("GET", f"/v2/nvcf/functions/{world.fid}/versions/{world.vid}", status=404, key=world.key_b)
    assert p["detail"] == f"Function id '{world.fid}', version '{world.vid}': Not found in account '{world.b}'"
    world.until(world.key_b, 404)


def test_share_then_list_get_queue_and_invoke(served, world):
    got = served.ok("POST", f"{AZ}/{world.fid}", {"authorizedParties": [{"ncaId": world.b}]})
    assert got == {"function": {"id": world.fid, "ncaId": "fngate", "authorizedParties": [{"ncaId": world.b}]}}
    listed = served.ok("GET", f"{AZ}/{world.fid}")["functions"]
    assert sorted(f["versionId"] for f in listed) == sorted([world.vid, world.vid2])
    assert all(f["authorizedParties"] == [{"ncaId": world.b}] and f["ncaId"] == "fngate" for f in listed)
    # the shared account: list (authorized only), get without owner-only fields, queues
    shared = served.ok("GET", "/v2/nvcf/functions?visibility=authorized", key=world.key_b)["functions"]
    assert {f["versionId"] for f in shared} == {world.vid, world.vid2}
    assert all(f["ownedByDifferentAccount"] is True and "containerImage" not in f and "inferenceUrl" not in f for f in shared)
    assert world.fid not in served.ok("GET", "/v2/nvcf/functions/ids?visibility=PRIVATE", key=world.key_b)["functionIds"]
    one = served.ok("GET", f"/v2/nvcf/functions/{world.fid}/versions/{world.vid}", key=world.key_b)["function"]
    assert one["ownedByDifferentAccount"] is True and "containerEnvironment" not in one
    assert served.ok("GET", f"/v2/nvcf/queues/functions/{world.fid}", key=world.key_b)["functionId"] == world.fid
    world.until(world.key_b, 200)
    # a key of that account without authorized-functions:* (spec 5.3)
    assert served.ok("GET", "/v2/nvcf/functions?visibility=authorized", key=world.key_b_own_only)["functions"] == []
    r = served.invoke(world.fid, world.key_b_own_only)
    assert r.status_code == 403 and r.json()["detail"] == f"Function '{world.fid}':  Not shared with the account '{world.b}'"
    # a third account still gets 404
    assert world.invoke(world.key_c) == 404


def test_a_shared_account_may_not_change_the_function(served, world):
    fv = f"{world.fid}/versions/{world.vid}"
    for method, path, body in (
        ("PUT", f"/v2/nvcf/functions/{fv}", {"tags": ["x"]}),
        ("DELETE", f"/v2/nvcf/functions/{fv}", None),
        ("POST", f"/v2/nvcf/functions/{world.fid}/versions", ECHO),
        ("POST", f"/v2/nvcf/deployments/functions/{fv}", {"deploymentSpecifications": [SPEC]}),
        ("GET", f"/v2/nvcf/deployments/functions/{fv}", None),
        ("DELETE", f"/v2/nvcf/deployments/functions/{fv}", None),
        ("GET", f"{AZ}/{world.fid}", None),
        ("POST", f"{AZ}/{world.fid}", {"authorizedParties": [{"ncaId": world.c}]}),
        ("DELETE", f"{AZ}/{world.fid}", None),
    ):
        p = served.problem(method, path, body, status=404, key=world.key_b)
        assert f"Not found in account '{world.b}'" in p["detail"], (method, path, p)
    assert served.ok("GET", f"/v2/nvcf/functions/{fv}")["function"]["status"] == "ACTIVE"


def test_add_remove_and_their_errors(served, world):
    got = served.ok("PATCH", f"{AZ}/{world.fid}/add", {"authorizedParty": {"ncaId": world.c}})["function"]
    assert got["authorizedParties"] == [{"ncaId": world.b}, {"ncaId": world.c}]
    world.until(world.key_c, 200)
    p = served.problem("PATCH", f"{AZ}/{world.fid}/add", {"authorizedParty": {"ncaId": world.c}}, status=409)
    assert p["detail"] == f"Function id '{world.fid}': Account '{world.c}' is already authorized to access the function"
    p = served.problem("PATCH", f"{AZ}/{world.fid}/remove", {"authorizedParty": {"ncaId": "fngate-x"}}, status=400)
    assert p["detail"] == "Account with ncaId 'fngate-x' not found"
    served.ok("PATCH", f"{AZ}/{world.fid}/remove", {"authorizedParty": {"ncaId": world.c}})
    p = served.problem("PATCH", f"{AZ}/{world.fid}/remove", {"authorizedParty": {"ncaId": world.c}}, status=404)
    assert p["detail"] == f"Function id '{world.fid}': Specified account '{world.c}' is not an authorized party for the function"
    world.until(world.key_c, 404)
    p = served.problem("PATCH", f"{AZ}/{world.fid}/add", {"authorizedParty": {"ncaId": "*"}}, status=400)
    assert p["detail"] == f"Function id '{world.fid}': Invalid authz account '*' specified for add operation"
    p = served.problem("PATCH", f"{AZ}/{world.fid}/versions/{world.vid}/add", {"authorizedParty": {"ncaId": world.c}}, status=404)
    assert p["detail"] == f"Function id '{world.fid}', version '{world.vid}': Does not have any authorized parties to be patched"


@pytest.mark.parametrize(
    "parties, detail",
    [
        ([], "Invalid request: Issues with the request payload"),
        ([{"ncaId": "B"}, {"ncaId": "B"}], "Invalid request: Duplicate authorized accounts specified"),
        ([{"ncaId": "fngate"}], "Invalid request: Authorized party mapped to account 'fngate' is invalid"),
        ([{"ncaId": "nobody-here"}], "Account with ncaId 'nobody-here' not found"),
        ([{"ncaId": "B", "clientId": "  "}], "Invalid request: clientId has only whitespaces"),
        ([{"ncaId": "B", "clientId": "ghost"}], "Client 'ghost' is not found and may not be onboarded yet"),
        (
            [{"ncaId": "B", "clientId": "client-of-c"}],
            "Invalid request: Account 'B' and client 'client-of-c' are not setup with each other",
        ),
        ([{"ncaId": "*"}, {"ncaId": "B"}], "Invalid request: Multiple authorized accounts specified with wildcard account"),
        ([{"ncaId": "*"}], "Function id '{fid}': Only NVIDIA Super Admin can make a function public"),
    ],
)
def test_create_validation(served, world, parties, detail):
    parties = [{**p, "ncaId": world.b if p["ncaId"] == "B" else p["ncaId"]} for p in parties]
    parties = [{**p, "clientId": world.client_of_c} if p.get("clientId") == "client-of-c" else p for p in parties]
    p = served.problem("POST", f"{AZ}/{world.fid}", {"authorizedParties": parties}, status=400)
    assert p["detail"] == detail.replace("'B'", f"'{world.b}'").replace("client-of-c", world.client_of_c).format(fid=world.fid)
    assert served.problem("POST", f"{AZ}/{uuid.uuid4()}", {"authorizedParties": [{"ncaId": world.c}]}, status=404)


def test_version_level_list(served, world):
    got = served.ok("POST", f"{AZ}/{world.fid}/versions/{world.vid2}", {"authorizedParties": [{"ncaId": world.c}]})["function"]
    assert got == {"id": world.fid, "ncaId": "fngate", "versionId": world.vid2, "authorizedParties": [{"ncaId": world.c}]}
    merged = served.ok("GET", f"{AZ}/{world.fid}/versions/{world.vid2}")["function"]["authorizedParties"]
    assert sorted(p["ncaId"] for p in merged) == sorted([world.b, world.c])
    world.until(world.key_c, 200, world.vid2)
    assert world.invoke(world.key_c, world.vid) == 404  # the other version is not shared with it
    assert world.invoke(world.key_c) == 200  # unpinned: only the shared version is chosen
    assert [f["versionId"] for f in served.ok("GET", "/v2/nvcf/functions?visibility=authorized", key=world.key_c)["functions"]] == [
        world.vid2
    ]
    assert served.ok("DELETE", f"{AZ}/{world.fid}/versions/{world.vid2}") == {
        "function": {"id": world.fid, "ncaId": "fngate", "versionId": world.vid2}
    }
    world.until(world.key_c, 404, world.vid2)


def test_public_through_the_super_admin_twin(served, world):
    twin = f"/v2/nvcf/accounts/fngate/authorizations/functions/{world.fid}"
    got = served.ok("POST", twin, {"authorizedParties": [{"ncaId": "*"}]})["function"]
    assert got["authorizedParties"] == [{"ncaId": "*"}]
    assert world.fid in served.ok("GET", "/v2/nvcf/functions/ids?visibility=public", key=world.key_c)["functionIds"]
    p = served.problem("PATCH", f"{AZ}/{world.fid}/add", {"authorizedParty": {"ncaId": world.c}}, status=400)
    assert p["detail"] == f"Function id '{world.fid}': Cannot add authorized parties for public function"
    world.until(world.key_c, 402)
    r = served.invoke(world.fid, world.key_c)
    assert r.json()["detail"] == f"Account '{world.c}': Cloud credits expired - Please contact NVIDIA representatives"
    # a key of another account cannot use the twin of this one
    served.problem("DELETE", twin, status=403, key=world.key_b)
    served.ok("DELETE", twin)
    world.until(world.key_c, 404)


def test_delete_the_function_level_list(served, world):
    served.ok("POST", f"{AZ}/{world.fid}", {"authorizedParties": [{"ncaId": world.b}]})
    world.until(world.key_b, 200)
    assert served.ok("DELETE", f"{AZ}/{world.fid}") == {"function": {"id": world.fid, "ncaId": "fngate"}}
    world.until(world.key_b, 404)
    assert served.ok("GET", "/v2/nvcf/functions?visibility=authorized", key=world.key_b)["functions"] == []
    p = served.problem("PATCH", f"{AZ}/{world.fid}/add", {"authorizedParty": {"ncaId": world.b}}, status=404)
    assert p["detail"] == f"Function id '{world.fid}': Does not have any authorized parties to be patched"
    served.problem("POST", f"{AZ}/{world.fid}", {"authorizedParties": [{"ncaId": world.b}]}, status=403, key=world.key_b_own_only)
