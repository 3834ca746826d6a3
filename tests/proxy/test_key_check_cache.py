"""KeyChecker keeps the grants that passed a check for one routing snapshot: a repeat
request of the same key is let in from the cache, and whatever a new snapshot changes
(a revoked key, an unshared function) or the clock does (an expired key) is refused at
once, as without the cache."""

from __future__ import annotations

import time

import pytest

from fngate.proxy.errors import Forbidden, MissingAuth, Unauthorized
from fngate.proxy.routing.lookup import KeyChecker
from fngate.proxy.routing.snapshot import KeyGrant, RoutingTable, key_digest

from .conftest import FID, route

KEY = b"nvapi-cache-test"
AUTH = b"Bearer " + KEY


def table(version: int, *grants: KeyGrant, key: bytes = KEY) -> RoutingTable:
    return RoutingTable.build(version, [route(9)], [(key_digest(key), g) for g in grants])


def grant(**kw: object) -> KeyGrant:
    return KeyGrant("k1", frozenset({"invoke_function"}), None, **kw)  # type: ignore[arg-type]


def test_a_repeat_check_returns_the_same_grant():
    keys, t = KeyChecker(), table(1, grant())
    first = keys.check(t, AUTH, FID)
    assert keys.check(t, AUTH, FID) is first
    assert keys.check(t, AUTH, None) is first


def test_a_key_revoked_by_a_new_snapshot_is_refused_at_once():
    keys = KeyChecker()
    keys.check(table(1, grant()), AUTH, FID)
    with pytest.raises(Unauthorized):
        keys.check(table(2), AUTH, FID)  # the new snapshot has no such key


def test_a_scope_taken_away_by_a_new_snapshot_is_refused():
    keys = KeyChecker()
    keys.check(table(1, grant()), AUTH, FID)
    with pytest.raises(Forbidden):
        keys.check(table(2, KeyGrant("k1", frozenset({"queue_details"}))), AUTH, FID)


def test_a_cached_grant_that_expires_is_refused():
    keys = KeyChecker()
    t = table(1, grant(expires_at=time.time() + 0.2))
    keys.check(t, AUTH, FID)
    time.sleep(0.3)
    with pytest.raises(Unauthorized):
        keys.check(t, AUTH, FID)


def test_refusals_are_not_cached_and_a_full_cache_starts_over():
    keys, t = KeyChecker(limit=2), table(1, grant())
    for _ in range(2):
        with pytest.raises(Unauthorized):
            keys.check(t, b"Bearer nvapi-wrong", FID)
        with pytest.raises(MissingAuth):
            keys.check(t, None, FID)
    for fid in ("a", "b", "c", FID):  # unknown functions pass the key check (resolve's 404)
        assert keys.check(t, AUTH, fid).key_id == "k1"
