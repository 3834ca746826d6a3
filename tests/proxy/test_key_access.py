"""The gateway's key check against the snapshot: resource entries, accounts and sharing
(spec 3.6, 5.3), with NVCF's statuses and messages; no I/O involved."""

from __future__ import annotations

import uuid

import pytest

from fngate.proxy.errors import Forbidden, NotFound, PaymentRequired, Unauthorized
from fngate.proxy.routing.lookup import KeyChecker, resolve
from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, RoutingTable, VersionRoute, key_digest

FID, V1, V2 = (str(uuid.uuid4()) for _ in range(3))
INVOKE = frozenset({"invoke_function"})


def table(v1_parties: frozenset[str] = frozenset(), v2_parties: frozenset[str] = frozenset(), grants=()) -> RoutingTable:
    routes = [
        VersionRoute(FID, vid, "fn", "ACTIVE", nca_id="owner", endpoints=(Endpoint(vid, "127.0.0.1", 1),), authorized=parties)
        for vid, parties in ((V1, v1_parties), (V2, v2_parties))
    ]
    return RoutingTable.build(1, routes, [(key_digest(k), g) for k, g in grants])


def check(t: RoutingTable, key: str, vid: str | None = None) -> KeyGrant:
    return KeyChecker().check(t, b"Bearer " + key.encode(), FID, vid)


def test_own_account_needs_a_resource_entry():
    grants = [
        ("all", KeyGrant("a", INVOKE, None, nca_id="owner")),
        ("fn", KeyGrant("f", INVOKE, frozenset({FID}), nca_id="owner")),
        ("v1", KeyGrant("v", INVOKE, frozenset(), nca_id="owner", version_ids=frozenset({f"{FID}/{V1}"}))),
        ("none", KeyGrant("n", INVOKE, frozenset(), nca_id="owner")),
    ]
    t = table(grants=grants)
    check(t, "all")
    check(t, "fn", V2)
    check(t, "v1", V1)
    with pytest.raises(Forbidden, match=f"^Function '{FID}':  Missing resource entry in ApiKey for the function$"):
        check(t, "v1")  # not pinned: the whole function is needed
    with pytest.raises(Forbidden, match=f"^Function id '{FID}', version '{V2}': Missing resource entry"):
        check(t, "v1", V2)
    with pytest.raises(Forbidden):
        check(t, "none")
    with pytest.raises(Unauthorized):
        check(t, "unknown")


def test_other_accounts_see_only_what_is_shared_with_them():
    grants = [
        ("b", KeyGrant("b", INVOKE, None, nca_id="b", shared=True)),
        ("b-own-only", KeyGrant("bo", INVOKE, None, nca_id="b", shared=False)),
        ("c", KeyGrant("c", INVOKE, None, nca_id="c", shared=True)),
    ]
    t = table(v2_parties=frozenset({"b"}), grants=grants)
    grant = check(t, "b", V2)
    assert resolve(t, FID, None, check(t, "b")).version_id == V2  # only the shared version is picked
    assert resolve(t, FID, V2, grant).version_id == V2
    with pytest.raises(NotFound):
        check(t, "b", V1)
    with pytest.raises(NotFound, match="account 'c'"):
        check(t, "c")
    with pytest.raises(Forbidden, match=f"^Function id '{FID}', version '{V2}': Not shared with the account 'b'$"):
        check(t, "b-own-only", V2)


def test_public_functions_answer_402_to_other_accounts():
    t = table(
        v1_parties=frozenset({"*"}),
        grants=[("c", KeyGrant("c", INVOKE, None, nca_id="c")), ("o", KeyGrant("o", INVOKE, None, nca_id="owner"))],
    )
    with pytest.raises(PaymentRequired, match=r"^Account 'c': Cloud credits expired - Please contact NVIDIA representatives$"):
        check(t, "c")
    check(t, "o")


def test_the_admin_grant_reaches_every_account():
    t = table(grants=[("admin", KeyGrant("admin", INVOKE, any_account=True, nca_id="fngate"))])
    assert resolve(t, FID, None, check(t, "admin")).function_id == FID


def test_grants_and_sharing_survive_the_wire_form():
    grant = KeyGrant("k", INVOKE, frozenset({FID}), 5.0, "b", "alice", frozenset({f"{FID}/{V1}"}), False, False)
    t = table(v1_parties=frozenset({"b", "*"}), grants=[("k", grant)])
    again = RoutingTable.from_json(t.to_json())
    assert again.keys[key_digest("k")] == grant
    assert again.functions[FID][V1].authorized == frozenset({"b", "*"})


def test_grpc_calls_take_the_same_check():
    from fngate.proxy.grpc.route import route_call

    routes = [
        VersionRoute(
            FID, V1, "g", "ACTIVE", nca_id="owner", grpc=True, endpoints=(Endpoint(V1, "127.0.0.1", 1),), authorized=frozenset({"b"})
        )
    ]
    grants = [("b", KeyGrant("b", INVOKE, None, nca_id="b")), ("c", KeyGrant("c", INVOKE, None, nca_id="c"))]
    t = RoutingTable.build(1, routes, [(key_digest(k), g) for k, g in grants])
    assert route_call(t, {"function-id": FID, "authorization": "Bearer b"}, KeyChecker()).version_id == V1
    with pytest.raises(NotFound, match="account 'c' is not found") as err:
        route_call(t, {"function-id": FID, "authorization": "Bearer c"}, KeyChecker())
    assert err.value.grpc_status == 5  # NOT_FOUND
