"""Host parsing, version choice and NVCF-POLL-SECONDS, as pure functions (property tests)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fngate.proxy.errors import BadRequest, Degraded, NotFound
from fngate.proxy.routing.lookup import poll_seconds, resolve, target_from_host
from fngate.proxy.routing.snapshot import RoutingTable

from .conftest import FID, VID, VID2, route

uuids = st.uuids().map(str)


@given(
    fid=uuids,
    vid=uuids,
    domain=st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z0-9-]{1,12}){0,3}", fullmatch=True),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    upper=st.booleans(),
)
def test_host_forms(fid, vid, domain, port, upper):
    suffix = f".invocation.{domain}" + (f":{port}" if port else "")
    f, v = (fid.upper(), vid.upper()) if upper else (fid, vid)
    assert target_from_host(f + suffix) == (fid, None)
    assert target_from_host(f"{v}.{f}{suffix}") == (fid, vid)


@given(st.text(max_size=200))
def test_any_host_string_is_safe(host):
    hit = target_from_host(host)
    if hit is not None:
        uuid.UUID(hit[0])
        assert hit[1] is None or uuid.UUID(hit[1])


@pytest.mark.parametrize("host", ["invocation.example.com", f"{FID}.api.example.com", "not-a-uuid.invocation.x", f"{FID}.invocation", ""])
def test_hosts_that_do_not_route(host):
    assert target_from_host(host) is None


@given(st.integers(-(10**6), 10**6))
def test_poll_seconds_range(n):
    """NVCF parses an unsigned integer: negatives and values over 3600 are 400, 0 is 1 s."""
    if n > 3600 or n < 0:
        with pytest.raises(BadRequest) as err:
            poll_seconds(str(n).encode(), 60)
        assert err.value.detail == "failed to parse poll duration"
    else:
        assert poll_seconds(str(n).encode(), 60) == max(n, 1)


def test_poll_seconds_default_and_garbage():
    assert poll_seconds(None, 60) == 60
    assert poll_seconds(b"+5", 60) == 5 and poll_seconds(b"0005", 60) == 5  # as Rust's u64 parse
    assert poll_seconds("ü".encode(), 60) == 60  # not visible ASCII: NVCF reads no header
    for bad in (b"", b"+", b"-0", b"1.5", b"ten", b"1e3", b"1_0", b"1 0", b"99999999999999999999999"):
        with pytest.raises(BadRequest) as err:
            poll_seconds(bad, 60)
        assert err.value.detail == "failed to parse poll duration"


def test_resolve_rules():
    table = RoutingTable.build(1, [route(1, status="ACTIVE"), route(2, vid=VID2, status="DEGRADED")], [])
    assert resolve(table, FID, None).version_id == VID  # only the invokable one is drawn
    with pytest.raises(Degraded):
        resolve(table, FID, VID2)
    with pytest.raises(NotFound):
        resolve(table, FID, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        resolve(table, str(uuid.uuid4()), None)
    only_degraded = RoutingTable.build(2, [route(2, vid=VID2, status="DEGRADED")], [])
    with pytest.raises(Degraded):
        resolve(only_degraded, FID, None)
