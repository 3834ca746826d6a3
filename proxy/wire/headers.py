"""Header rules of the forwarding hop (spec 5.2 and 9): what the instance receives and
what the client gets back. Route-constant NVCF-* headers are built once per route
version and cached as bytes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from fngate.proxy.errors import BadRequest
from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, VersionRoute

Headers = list[tuple[bytes, bytes]]  # lower-case names, raw values (the client seam uses the same)

_T = TypeVar("_T")
_Wire = TypeVar("_Wire", bound=tuple[bytes, ...])

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
    }
)
# Forwarding headers the gateway writes itself (x-forwarded-for/-host/-proto and
# Forwarded, from the connection it accepted); a client's own values, and the other
# names proxies use for the same facts, are dropped: the gateway is the edge, so
# nothing a client claims about its address or the original request is passed on.
FORWARDING = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
    }
)
# never forwarded to the instance: the caller's credential, hop-level framing, and the
# headers the platform owns (a client cannot spoof them)
_DROP_TO_INSTANCE = (
    HOP_BY_HOP
    | FORWARDING
    | frozenset(
        {
            b"authorization",
            b"host",
            b"content-length",
            b"expect",
            b"nvcf-reqid",
            b"nvcf-sub",
            b"nvcf-ncaid",
            b"nvcf-function-name",
            b"nvcf-function-id",
            b"nvcf-function-version-id",
            b"nvcf-asset-dir",
            b"nvcf-function-asset-ids",
            b"nvcf-large-output-dir",
            b"nvcf-max-response-size-bytes",
            b"nvcf-nspectid",
            b"nvcf-backend",
            b"nvcf-instancetype",
            b"nvcf-region",
            b"nvcf-env",
            b"nvcf-invocation-region",
            b"nvcf-poll-seconds",
            b"nvcf-feature-disable-worker-compatibility",
            # HTTP/2 pseudo-headers
            b":method",
            b":path",
            b":scheme",
            b":authority",
            b":protocol",
            b":status",
        }
    )
)


# client field names found not protected (names are lower-case: both drivers make sure);
# a client repeats them, so one set lookup decides. Bounded, emptied when full.
_PASSING: set[bytes] = set()
_PASSING_MAX = 2048


def _passes(name: bytes) -> bool:
    if is_protected(name):
        return False
    if len(_PASSING) >= _PASSING_MAX:
        _PASSING.clear()
    _PASSING.add(name)
    return True


def is_protected(name: bytes) -> bool:
    """True for a (lower-case) request field name a client may not pass to the instance:
    the ones above, and any that a WSGI/CGI server would read as one of them, since it
    maps `NVCF_SUB` and `NVCF-SUB` alike to HTTP_NVCF_SUB. For every driver (HTTP/1.1,
    HTTP/2, and the gRPC relay's instance headers)."""
    return name in _DROP_TO_INSTANCE or (b"_" in name and name.replace(b"_", b"-") in _DROP_TO_INSTANCE)


# response headers the gateway sets itself or re-frames
_DROP_TO_CLIENT = HOP_BY_HOP | frozenset({b"nvcf-reqid", b"nvcf-status"})

MAX_RESPONSE_SIZE = b"5242880"


# A request target an HTTP/1.1 instance request may carry (RFC 9112 3.2): origin-form
# (a path, then maybe a query), without a fragment, a space or a control or non-ASCII
# octet; or "*" for OPTIONS.
_BAD_TARGET_OCTET = re.compile(rb"[^\x21-\x7e]|#").search


# Host / :authority (RFC 9110 7.2 / RFC 3986 3.2.2): a reg-name or an IP literal, then
# maybe a port; llhttp and nghttp2 take any visible octet there. Empty is allowed (a URI
# without authority).
_VALID_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?").fullmatch


def valid_host(authority: bytes) -> bool:
    """`authority` can be the instance request's Host as it is (both client drivers check it)."""
    return not authority or _VALID_HOST(authority) is not None


def check_target(method: str, target: bytes) -> None:
    """Raise BadRequest unless `target` can go on an HTTP/1.1 request line as it is. The
    HTTP/1.1 driver calls it for targets that do not start with "/" or hold a "#"
    (llhttp has checked the octets); an HTTP/2 driver calls it for every :path."""
    if target == b"*":
        if method != "OPTIONS":
            raise BadRequest("the request target '*' is only for OPTIONS")
        return
    if target[:1] != b"/":
        raise BadRequest("the request target must be a path (origin-form)")
    if _BAD_TARGET_OCTET(target) is not None:
        raise BadRequest("the request target holds a fragment, a space, or a control or non-ASCII octet")


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in `Connection:` (also hop-by-hop for this hop)."""
    names: set[bytes] = set()
    for n, v in headers:
        if n == b"connection":
            names.update(t.strip().lower() for t in v.split(b","))
    return frozenset(names)


class RequestLines(NamedTuple):
    """What RouteHeaders.for_call keeps per (route, endpoint, key): the `host` line; the
    NVCF-* lines in the pieces between which the request id goes (three times) and then
    the poll seconds left; the closing `via` line and blank line. Joined, not %-formatted:
    bytes formatting costs more than the join of the pieces."""

    host: bytes
    before_id: bytes  # the route's NVCF-* lines, then `NVCF-REQID: `
    before_asset_id: bytes
    before_output_id: bytes
    before_poll: bytes
    after_poll: bytes  # (and the worker-compatibility line of a host-routed call)
    via: bytes


# b"1" .. b"3600" (NVCF-POLL-SECONDS is at most 3600), so a request formats no number
_SECONDS = tuple(b"%d" % n for n in range(3602))
_METHOD_BYTES = {m: m.encode() for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}


class RouteHeaders:
    """Per-route constant NVCF-* header bytes, cached by route identity; likewise an
    endpoint's `host` value and a key grant's NVCF-SUB / NVCF-NCAID values. The caches hold
    the objects of one routing snapshot: a call routed on a newer one empties them, or they
    would keep every superseded snapshot's routes alive until full (the leader publishes a
    whole new table whenever an instance changes state)."""

    __slots__ = ("_cache", "_calls", "_table", "_wire", "asset_base", "output_base", "region")

    def __init__(self, region: str, asset_dir: str = "/var/inf/inputAssets", output_dir: str = "/var/inf/response") -> None:
        self._cache: dict[int, tuple[VersionRoute, bytes]] = {}
        self._calls: dict[tuple[int, int, int, bool, bool], tuple[VersionRoute, Endpoint, KeyGrant, RequestLines]] = {}
        self.region = region.encode()
        self.asset_base = asset_dir.encode()  # NVCF-ASSET-DIR is {asset_base}/{requestId}
        self.output_base = output_dir.encode()  # NVCF-LARGE-OUTPUT-DIR likewise
        self._wire: dict[int, tuple[object, tuple[bytes, ...]]] = {}
        self._table: object = None  # the routing snapshot the cached objects belong to

    def for_endpoint(self, ep: Endpoint) -> bytes:
        hit = self._wire.get(id(ep))
        if hit is not None and hit[0] is ep:
            return hit[1][0]
        return self._remember(ep, (b"%s:%d" % (ep.host.encode(), ep.port),))[0]

    def for_grant(self, grant: KeyGrant) -> tuple[bytes, bytes]:
        """(subject, nca id) as bytes."""
        hit = self._wire.get(id(grant))
        if hit is not None and hit[0] is grant:
            return hit[1]  # type: ignore[return-value]  # a grant's entry is always (subject, nca id)
        return self._remember(grant, (grant.subject.encode() or grant.key_id.encode(), grant.nca_id.encode()))

    def _remember(self, obj: object, value: _Wire) -> _Wire:
        if len(self._wire) > 8192:
            self._wire.clear()
        self._wire[id(obj)] = (obj, value)  # holding obj keeps its id from being reused
        return value

    def for_call(self, table: object, route: VersionRoute, ep: Endpoint, grant: KeyGrant, host_routed: bool, http2: bool) -> RequestLines:
        """The instance request's lines that are the same for every request of this route,
        endpoint and key (see RequestLines), built once and kept while `table` (the routing
        snapshot the call was routed on) is the newest seen."""
        if table is not self._table:
            self._table = table
            self._calls.clear()
            self._cache.clear()
            self._wire.clear()
        key = (id(route), id(ep), id(grant), host_routed, http2)
        hit = self._calls.get(key)
        if hit is not None and hit[0] is route and hit[1] is ep and hit[2] is grant:
            return hit[3]
        if len(self._calls) > 8192:
            self._calls.clear()
        subject, nca_id = self.for_grant(grant)
        fixed = RequestLines(
            b"host: %s\r\n" % self.for_endpoint(ep),
            self.for_route(route) + b"NVCF-REQID: ",
            b"\r\nNVCF-SUB: %s\r\nNVCF-NCAID: %s\r\nNVCF-ASSET-DIR: %s/" % (subject, nca_id, self.asset_base),
            b"\r\nNVCF-LARGE-OUTPUT-DIR: %s/" % self.output_base,
            b"\r\nnvcf-poll-seconds: ",
            b"\r\n%s" % (b"nvcf-feature-disable-worker-compatibility: true\r\n" if host_routed else b""),
            b"via: %s fngate\r\n\r\n" % (b"2" if http2 else b"1.1"),
        )
        self._calls[key] = (route, ep, grant, fixed)  # holding them keeps their ids from being reused
        return fixed

    def for_route(self, route: VersionRoute) -> bytes:
        hit = self._cache.get(id(route))
        if hit is not None and hit[0] is route:
            return hit[1]
        if len(self._cache) > 4096:
            self._cache.clear()
        data = b"".join(
            b"%s: %s\r\n" % (n, v.encode() if isinstance(v, str) else v)
            for n, v in (
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


# The gateway's forwarding lines for recent (client address, host, scheme): a client
# sends the same on every request of a connection. Bounded, emptied when full.
_FORWARDING: dict[tuple[str, bytes, bytes], bytes] = {}
_FORWARDING_MAX = 4096


def _forwarding_lines(client_addr: str, authority: bytes, scheme: bytes) -> bytes:
    addr = client_addr.encode()
    # Forwarded (RFC 7239 6): IPv6 as a quoted IP-literal; the host is a quoted-string
    forwarded_for = b'"[%s]"' % addr if b":" in addr else addr
    quoted_host = authority.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    lines = b'x-forwarded-for: %s\r\nx-forwarded-host: %s\r\nx-forwarded-proto: %s\r\nforwarded: for=%s;host="%s";proto=%s\r\n' % (
        addr,
        authority,
        scheme,
        forwarded_for,
        quoted_host,
        scheme,
    )
    if len(_FORWARDING) >= _FORWARDING_MAX:
        _FORWARDING.clear()
    _FORWARDING[(client_addr, authority, scheme)] = lines
    return lines


def upstream_head(
    method: str,
    target: bytes,
    headers: Headers,
    route_bytes: bytes,
    *,
    host: bytes,
    request_id: bytes,
    subject: bytes,
    nca_id: bytes,
    poll_left: int,
    body: bytes | None,
    client_addr: str,
    host_routed: bool,
    authority: bytes,
    http2: bool = False,
    scheme: bytes = b"http",
    asset_base: bytes = b"/var/inf/inputAssets",
    output_base: bytes = b"/var/inf/response",
) -> bytes:
    """The HTTP/1.1 request head for the instance.

    `body` is the framing header line for the request body (`content-length: N` or
    `transfer-encoding: chunked`), or None when there is no body."""
    drop = _DROP_TO_INSTANCE
    has_ct = False
    for n, _ in headers:
        if n == b"connection":  # the names it lists are hop-by-hop too
            drop = drop | connection_tokens(headers)
        elif n == b"content-type":
            has_ct = True
    if drop is _DROP_TO_INSTANCE:  # the common case: a name that passed once passes again
        kept = [b"%s: %s\r\n" % hv for hv in headers if hv[0] in _PASSING or _passes(hv[0])]
    else:
        kept = [b"%s: %s\r\n" % hv for hv in headers if hv[0] not in drop and not is_protected(hv[0])]
    forwarding = _FORWARDING.get((client_addr, authority, scheme))
    if forwarding is None:
        forwarding = _forwarding_lines(client_addr, authority, scheme)
    return (
        b"%s %s HTTP/1.1\r\nhost: %s\r\n%s%s%s%sNVCF-REQID: %s\r\nNVCF-SUB: %s\r\nNVCF-NCAID: %s\r\n"
        b"NVCF-ASSET-DIR: %s/%s\r\nNVCF-LARGE-OUTPUT-DIR: %s/%s\r\n"
        b"nvcf-poll-seconds: %d\r\n%s%svia: %s fngate\r\n\r\n"
        % (
            method.encode(),
            target,
            host,
            b"".join(kept),
            b"" if has_ct else b"content-type: application/json\r\n",
            body or b"",
            route_bytes,
            request_id,
            subject,
            nca_id,
            asset_base,
            request_id,
            output_base,
            request_id,
            poll_left,
            b"nvcf-feature-disable-worker-compatibility: true\r\n" if host_routed else b"",
            forwarding,
            b"2" if http2 else b"1.1",
        )
    )


def call_head(
    method: str,
    target: bytes,
    headers: Headers,
    fixed: RequestLines,
    *,
    request_id: bytes,
    poll_left: int,
    body: bytes | None,
    client_addr: str,
    authority: bytes,
    scheme: bytes,
) -> bytes:
    """upstream_head's bytes from the lines RouteHeaders.for_call kept: only the request
    line, the client's own fields, the framing line, the request id, the poll seconds and
    the forwarding lines are put together per request, in one join."""
    has_ct = False
    plain = True
    for n, _ in headers:
        if n == b"connection":
            plain = False
        elif n == b"content-type":
            has_ct = True
    drop = _DROP_TO_INSTANCE if plain else _DROP_TO_INSTANCE | connection_tokens(headers)
    # unpacked at once: a NamedTuple's field by name is a descriptor call each
    host, before_id, before_asset_id, before_output_id, before_poll, after_poll, via = fixed
    parts = [_METHOD_BYTES.get(method) or method.encode(), b" ", target, b" HTTP/1.1\r\n", host]
    for n, v in headers:
        # the common case: a name that passed once passes again
        if (n in _PASSING or _passes(n)) if plain else (n not in drop and not is_protected(n)):
            parts.append(n)  # (appends: `parts += (...)` builds a tuple per field)
            parts.append(b": ")
            parts.append(v)
            parts.append(b"\r\n")
    if not has_ct:
        parts.append(b"content-type: application/json\r\n")
    if body:
        parts.append(body)
    forwarding = _FORWARDING.get((client_addr, authority, scheme))
    if forwarding is None:
        forwarding = _forwarding_lines(client_addr, authority, scheme)
    parts += (
        before_id,
        request_id,
        before_asset_id,
        request_id,
        before_output_id,
        request_id,
        before_poll,
        _SECONDS[poll_left] if 0 <= poll_left < 3602 else b"%d" % poll_left,
        after_poll,
        forwarding,
        via,
    )
    return b"".join(parts)


def client_headers(upstream: Headers, request_id: bytes, nvcf_status: bytes) -> Headers:
    """Response headers for the client: the instance's, re-framed, plus nvcf-reqid/status."""
    extra = connection_tokens(upstream)
    out = [(n, v) for n, v in upstream if n not in _DROP_TO_CLIENT and n not in extra]
    out.append((b"nvcf-reqid", request_id))
    out.append((b"nvcf-status", nvcf_status))
    return out


# -- the instance's response head as raw bytes (the fast path, and parsed for the task) --
# llhttp has validated the head before these run: CRLF line ends, no obs-fold.
_FIELD = re.compile(rb"^([^:\r\n]+):[ \t]*(.*?)[ \t]*\r$", re.M)
# one line to drop, from the newline before it up to (not including) its own; on the
# lower-cased block, whose offsets are the original's
_DROP_LINE = re.compile(rb"\n(?:" + b"|".join(re.escape(n) for n in sorted(_DROP_TO_CLIENT)) + rb")[ \t]*:[^\n]*")
_CONNECTION = re.compile(rb"\nconnection[ \t]*:([^\n]*)")
_EVENT_STREAM = re.compile(rb"\ncontent-type[ \t]*:[ \t]*text/event-stream")
_PLAIN_CONNECTION = frozenset({b"close", b"keep-alive", b""})


def parse_header_block(block: bytes) -> Headers:
    """Header lines as received -> [(lower-case name, value)]."""
    return [(n.lower(), v) for n, v in _FIELD.findall(block)]


# An instance sends the same head again and again (until its Date changes), so the
# work done on a head is kept for recent ones: at most 512 heads of up to 2 KiB each.
_HEAD_CACHE_MAX = 512
_HEAD_CACHE_BLOCK = 2048
_REWRITTEN: dict[bytes, tuple[bytes, bool, bool]] = {}
_FIELDS: dict[bytes, Headers] = {}


def _recent(cache: dict[bytes, _T], key: bytes, compute: Callable[[bytes], _T]) -> _T:
    hit = cache.get(key)
    if hit is None:
        hit = compute(key)
        if len(key) <= _HEAD_CACHE_BLOCK:
            if len(cache) >= _HEAD_CACHE_MAX:
                cache.clear()
            cache[key] = hit
    return hit


def client_head_block(block: bytes) -> tuple[bytes, bool, bool]:
    """The instance's header lines re-written for the client, without a per-header step:
    (lines, framed by content-length, is an event stream). Same rules as client_headers
    (hop-by-hop headers dropped and gateway-owned ones too; the caller adds nvcf-reqid
    and nvcf-status). Kept for recent heads."""
    hit = _REWRITTEN.get(block)  # (the common case without a call of _recent)
    return hit if hit is not None else _recent(_REWRITTEN, block, _rewrite_block)


def client_head_fields(lines: bytes) -> Headers:
    """client_head_block's lines as [(name, value)] for an HTTP/2 client (kept for recent
    heads; the list is shared, so callers copy it before adding to it)."""
    return _recent(_FIELDS, lines, parse_header_block)


def _rewrite_block(block: bytes) -> tuple[bytes, bool, bool]:
    block = b"\n" + block
    low = block.lower()
    if b"\nconnection" in low and (
        low.count(b"\nconnection") > 1 or (b"\nconnection: keep-alive\r" not in low and b"\nconnection: close\r" not in low)
    ):
        tokens = [t.strip() for m in _CONNECTION.finditer(low) for t in m.group(1).split(b",")]
        if not _PLAIN_CONNECTION.issuperset(tokens):  # Connection names more headers to drop
            extra = frozenset(tokens)
            return (
                b"".join(b"%s: %s\r\n" % (n, v) for n, v in parse_header_block(block[1:]) if n not in _DROP_TO_CLIENT and n not in extra),
                b"\ncontent-length:" in low,
                _EVENT_STREAM.search(low) is not None,
            )
    parts = []
    at = 1
    for m in _DROP_LINE.finditer(low):
        parts.append(block[at : m.start() + 1])
        at = m.end() + 1
    parts.append(block[at:])
    return (b"".join(parts), b"\ncontent-length:" in low, b"text/event-stream" in low and _EVENT_STREAM.search(low) is not None)
