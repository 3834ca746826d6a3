"""Header building on the forwarding hop: the instance's request head and the client's headers."""

from __future__ import annotations

from fngate.bench.fngate import Upstream, build_table, function_id
from fngate.proxy.config import LOOPBACK
from fngate.proxy.wire.headers import RouteHeaders, client_headers, upstream_head

ROUTE = next(iter(build_table([Upstream("fn", LOOPBACK, 9000)]).functions[function_id("fn")].values()))
REQUEST = [
    (b"host", b"fn.invocation.localhost"),
    (b"user-agent", b"wrk"),
    (b"accept", b"*/*"),
    (b"authorization", b"Bearer nvapi-secret"),
    (b"content-type", b"application/json"),
    (b"x-trace-id", b"0123456789abcdef"),
]
RESPONSE = [
    (b"content-type", b"application/json"),
    (b"content-length", b"100"),
    (b"date", b"Mon, 23 Nov 2026 14:00:00 GMT"),
    (b"server", b"nginx"),
    (b"connection", b"keep-alive"),
]


def test_route_headers_cached(benchmark):
    cache = RouteHeaders("local")
    cache.for_route(ROUTE)
    assert b"NVCF-FUNCTION-ID" in benchmark(cache.for_route, ROUTE)


def test_upstream_request_head(benchmark):
    route_bytes = RouteHeaders("local").for_route(ROUTE)

    def build():
        return upstream_head(
            "POST",
            b"/v1/infer",
            REQUEST,
            route_bytes,
            host=f"{LOOPBACK}:9000".encode(),
            request_id=b"6f1c2d3e-0000-4000-8000-000000000000",
            subject=b"bench",
            nca_id=b"fngate",
            poll_left=60,
            body=b"content-length: 100\r\n",
            client_addr=LOOPBACK,
            host_routed=True,
            authority=b"fn.invocation.localhost",
            http2=False,
        )

    head = benchmark(build)
    assert head.startswith(b"POST /v1/infer HTTP/1.1\r\n") and b"authorization" not in head


def test_client_response_headers(benchmark):
    out = benchmark(client_headers, RESPONSE, b"6f1c2d3e-0000-4000-8000-000000000000", b"fulfilled")
    assert (b"connection", b"keep-alive") not in out and out[-1] == (b"nvcf-status", b"fulfilled")
