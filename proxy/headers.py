"""Header rules of the forwarding hop (spec 5.2 and 9): what the instance receives and
what the client gets back. Route-constant NVCF-* headers are built once per route
version and cached as bytes."""

from __future__ import annotations

from proxy.exchange import Headers
from proxy.routing import VersionRoute

HOP_BY_HOP = frozenset({
    b"connection", b"proxy-connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"te", b"trailer", b"transfer-encoding", b"upgrade", b"http2-settings",
})
# never forwarded to the instance: the caller's credential, hop-level framing, and the
# headers the platform owns (a client cannot spoof them)
_DROP_TO_INSTANCE = HOP_BY_HOP | frozenset({
    b"authorization", b"host", b"content-length", b"expect",
    b"nvcf-reqid", b"nvcf-sub", b"nvcf-ncaid", b"nvcf-function-name", b"nvcf-function-id",
    b"nvcf-function-version-id", b"nvcf-asset-dir", b"nvcf-large-output-dir",
    b"nvcf-max-response-size-bytes", b"nvcf-nspectid", b"nvcf-backend", b"nvcf-instancetype",
    b"nvcf-region", b"nvcf-env", b"nvcf-invocation-region", b"nvcf-poll-seconds",
    b"nvcf-feature-disable-worker-compatibility",
})
# response headers the gateway sets itself or re-frames
_DROP_TO_CLIENT = HOP_BY_HOP | frozenset({b"nvcf-reqid", b"nvcf-status"})

MAX_RESPONSE_SIZE = b"5242880"


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in `Connection:` (also hop-by-hop for this hop)."""
    names: set[bytes] = set()
    for n, v in headers:
        if n == b"connection":
            names.update(t.strip().lower() for t in v.split(b","))
    return frozenset(names)


class RouteHeaders:
    """Per-route constant NVCF-* header bytes, cached by route identity."""

    __slots__ = ("_cache", "region")

    def __init__(self, region: str) -> None:
        self._cache: dict[int, tuple[VersionRoute, bytes]] = {}
        self.region = region.encode()

    def for_route(self, route: VersionRoute) -> bytes:
        hit = self._cache.get(id(route))
        if hit is not None and hit[0] is route:
            return hit[1]
        if len(self._cache) > 4096:
            self._cache.clear()
        data = b"".join(
            b"%s: %s\r\n" % (n, v.encode() if isinstance(v, str) else v) for n, v in (
                (b"NVCF-FUNCTION-NAME", route.name),
                (b"NVCF-FUNCTION-ID", route.function_id),
                (b"NVCF-FUNCTION-VERSION-ID", route.version_id),
                (b"NVCF-MAX-RESPONSE-SIZE-BYTES", MAX_RESPONSE_SIZE),
                (b"NVCF-BACKEND", route.backend),
                (b"NVCF-INSTANCETYPE", route.instance_type),
                (b"NVCF-REGION", route.region),
                (b"NVCF-ENV", route.env),
                (b"NVCF-INVOCATION-REGION", self.region),
            )
        )
        self._cache[id(route)] = (route, data)
        return data


def upstream_head(method: str, target: bytes, headers: Headers, route_bytes: bytes, *, host: bytes,
                  request_id: bytes, subject: bytes, nca_id: bytes, poll_left: int, body: bytes | None,
                  client_addr: str, host_routed: bool, authority: bytes, http2: bool = False,
                  scheme: bytes = b"http") -> bytes:
    """The HTTP/1.1 request head for the instance.

    `body` is the framing header line for the request body (`content-length: N` or
    `transfer-encoding: chunked`), or None when there is no body."""
    extra = connection_tokens(headers)
    parts = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), target, host)]
    append = parts.append
    has_ct = False
    for n, v in headers:
        if n in _DROP_TO_INSTANCE or n in extra or n[:1] == b":":
            continue
        if n == b"content-type":
            has_ct = True
        append(b"%s: %s\r\n" % (n, v))
    if not has_ct:
        append(b"content-type: application/json\r\n")
    if body is not None:
        append(body)
    append(route_bytes)
    append(b"NVCF-REQID: %s\r\nNVCF-SUB: %s\r\nNVCF-NCAID: %s\r\nNVCF-ASSET-DIR: /var/inf/inputAssets/%s\r\n"
           b"NVCF-LARGE-OUTPUT-DIR: /var/inf/response/%s\r\nnvcf-poll-seconds: %d\r\n"
           % (request_id, subject, nca_id, request_id, request_id, poll_left))
    if host_routed:
        append(b"nvcf-feature-disable-worker-compatibility: true\r\n")
    append(b"x-forwarded-for: %s\r\nx-forwarded-host: %s\r\nx-forwarded-proto: %s\r\nvia: %s fngate\r\n\r\n"
           % (client_addr.encode(), authority, scheme, b"2" if http2 else b"1.1"))
    return b"".join(parts)


def client_headers(upstream: Headers, request_id: bytes, nvcf_status: bytes) -> Headers:
    """Response headers for the client: the instance's, re-framed, plus nvcf-reqid/status."""
    extra = connection_tokens(upstream)
    out = [(n, v) for n, v in upstream if n not in _DROP_TO_CLIENT and n not in extra]
    out.append((b"nvcf-reqid", request_id))
    out.append((b"nvcf-status", nvcf_status))
    return out
