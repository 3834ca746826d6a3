"""The instance request head from the per-(route, endpoint, key) lines RouteHeaders keeps
(call_head, what the call sends) is byte for byte upstream_head's, built from scratch."""

from __future__ import annotations

import gc

import pytest

from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, VersionRoute
from fngate.proxy.wire.headers import RouteHeaders, call_head, upstream_head

ROUTE = VersionRoute(
    function_id="f-1", version_id="v-1", name="fn 100%", status="ACTIVE", inference_url="/", inference_port=1, endpoints=()
)
EP = Endpoint("e-1", "10.0.0.7", 8080)
GRANT = KeyGrant("key%d", frozenset({"invoke_function"}), None, subject="sub%s", nca_id="nca-1")
TABLE = object()  # the routing snapshot the call was routed on

CASES = [
    ("GET", b"/", [(b"accept", b"*/*")], None, False, False),
    ("POST", b"/x?q=1", [(b"content-type", b"text/plain"), (b"x-a", b"%d%s")], b"content-length: 3\r\n", True, False),
    (
        "POST",
        b"/",
        [(b"connection", b"x-hop"), (b"x-hop", b"1"), (b"nvcf_sub", b"spoof"), (b"x-b", b"2")],
        b"transfer-encoding: chunked\r\n",
        True,
        True,
    ),
    ("PUT", b"/", [(b"authorization", b"Bearer k"), (b"host", b"h"), (b"content-length", b"0")], b"content-length: 0\r\n", False, True),
]


@pytest.mark.parametrize(("method", "target", "headers", "body", "host_routed", "http2"), CASES)
def test_call_head_is_upstream_head(method, target, headers, body, host_routed, http2):
    wire = RouteHeaders("eu-1")
    subject, nca_id = wire.for_grant(GRANT)
    common = {"request_id": b"rid-1", "poll_left": 7, "body": body, "client_addr": "::1", "authority": b"a.example", "scheme": b"https"}
    expected = upstream_head(
        method, target, headers, wire.for_route(ROUTE), host=wire.for_endpoint(EP), subject=subject, nca_id=nca_id,
        host_routed=host_routed, http2=http2, **common,
    )  # fmt: skip
    for _ in range(2):  # built, then kept
        fixed = wire.for_call(TABLE, ROUTE, EP, GRANT, host_routed, http2)
        assert call_head(method, target, headers, fixed, **common) == expected
    assert wire.for_call(TABLE, ROUTE, EP, GRANT, host_routed, http2) is fixed
    assert b"NVCF-SUB: sub%s\r\n" in expected and b"nvcf-poll-seconds: 7\r\n" in expected


def test_call_head_carries_the_configured_asset_and_output_dirs():
    """NVCF-ASSET-DIR / NVCF-LARGE-OUTPUT-DIR come from the gateway's asset_dir/output_dir
    (pexec reads progress and artifacts there), on the kept lines as in upstream_head."""
    wire = RouteHeaders("eu-1", "/data/inf/inputAssets", "/data/inf/response")
    subject, nca_id = wire.for_grant(GRANT)
    common = {"request_id": b"rid-2", "poll_left": 3, "body": None, "client_addr": "10.1.1.1", "authority": b"a", "scheme": b"http"}
    expected = upstream_head(
        "POST", b"/", [], wire.for_route(ROUTE), host=wire.for_endpoint(EP), subject=subject, nca_id=nca_id,
        host_routed=False, asset_base=wire.asset_base, output_base=wire.output_base, **common,
    )  # fmt: skip
    got = call_head("POST", b"/", [], wire.for_call(TABLE, ROUTE, EP, GRANT, False, False), **common)
    assert got == expected
    assert b"NVCF-ASSET-DIR: /data/inf/inputAssets/rid-2\r\n" in got
    assert b"NVCF-LARGE-OUTPUT-DIR: /data/inf/response/rid-2\r\n" in got
    assert b"/var/inf/" not in got


def test_superseded_snapshots_are_not_kept_alive():
    """The leader publishes a whole new table whenever an instance changes state (in the
    reference soak about ten a minute); the kept lines must not hold on to the old ones'
    routes, or the process grows with every publish (8.7 MiB/h on the soak's leader)."""
    wire = RouteHeaders("eu-1")
    for n in range(200):
        route = VersionRoute(function_id="f-2", version_id=f"v-{n}", name="fn", status="ACTIVE", inference_url="/", endpoints=())
        wire.for_call(object(), route, Endpoint(f"e-{n}", "10.0.0.7", 8080), GRANT, False, False)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, VersionRoute) and o.function_id == "f-2"]
    assert len(alive) <= 1, f"{len(alive)} routes of superseded snapshots still held"
