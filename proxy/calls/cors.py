"""CORS on the gateway's path routes, as NVCF's invocation service (spec part 2, section 9).

Path routes (`/v2/nvcf/pexec/...`, `/health`, `/v2/health/ready`, and the 404 for a
request no function matches) answer a preflight themselves, before any key check: 200,
the request's Origin, method and headers mirrored, credentials allowed, cached a day.
Their other answers to a request with an Origin carry the Origin, credentials, and
expose `nvcf-reqid` and `nvcf-status` to the page.

Host-routed calls (`{fid}.invocation.<domain>`, a `function-id` header) have no CORS layer
at NVCF: the key check comes first (a preflight without a key gets 401) and an OPTIONS
with a key reaches the instance, whose headers pass through. So here.
"""

from __future__ import annotations

from fngate.proxy.calls.exchange import Exchange, Headers

VARY = b"origin, access-control-request-method, access-control-request-headers"
EXPOSED = b"nvcf-reqid, nvcf-status"
MAX_AGE = b"86400"


def apply_cors(ex: Exchange, allow: bytes | None) -> bool:
    """True when `ex` was a preflight and is answered; else its later answer gets the
    CORS fields when it has an Origin. `allow`: the route's methods (the `Allow` field)."""
    origin = method = req_headers = None
    for n, v in ex.headers:
        if n == b"origin":
            origin = v
        elif n == b"access-control-request-method":
            method = v
        elif n == b"access-control-request-headers":
            req_headers = v
    if ex.method == "OPTIONS" and method is not None:
        head: Headers = [(b"content-length", b"0"), (b"vary", VARY)]
        if origin is not None:
            head += [(b"access-control-allow-origin", origin), (b"access-control-allow-credentials", b"true")]
        head += [(b"access-control-allow-methods", method), (b"access-control-max-age", MAX_AGE)]
        if req_headers is not None:
            head.append((b"access-control-allow-headers", req_headers))
        if allow is not None:
            head.append((b"allow", allow))
        ex.start_response(200, head)
        ex.end()
        return True
    if origin is not None:
        ex.extra_headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", EXPOSED),
            (b"vary", VARY),
        ]
    return False


def pexec_allow(target: bytes) -> bytes:
    """The methods of a pexec route: the status poll is GET, an invocation POST."""
    return b"GET,HEAD" if target.startswith(b"/v2/nvcf/pexec/status/") else b"POST"
