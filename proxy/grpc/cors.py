"""CORS on the gRPC port, as NVCF's gRPC proxy serves it (spec part 2, section 9;
NVCF's grpc-proxy proxy/middleware/middleware.go and director.go, go-chi/cors).

- A preflight (OPTIONS with Access-Control-Request-Method), on any path, is answered by
  the port itself before any key check: 200, `Vary: Origin`,
  `Vary: Access-Control-Request-Method`, `Vary: Access-Control-Request-Headers`; with an
  Origin and a requested method among HEAD, GET, POST, PUT, PATCH, DELETE (or OPTIONS)
  also the Origin mirrored, that method, the requested headers (as go-chi lists them:
  each name capitalised, joined by ", "), `Access-Control-Allow-Credentials: true` and
  `Access-Control-Max-Age: 3600`.
- The gateway's own error answers (trailers-only) get `Vary: Origin`, and with an Origin
  the Origin mirrored and credentials allowed. No header is exposed
  (no Access-Control-Expose-Headers): NVCF sets none here.
- Answers that come from the instance get no CORS fields: the container adds its own.

There is no grpc-web translation, at NVCF or here: a grpc-web request is not gRPC to the
gateway and is forwarded as an HTTP call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fngate.proxy.calls.exchange import Exchange, RequestHandler

Headers = list[tuple[bytes, bytes]]

_METHODS = frozenset({b"HEAD", b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
_VARY = [(b"vary", b"Origin"), (b"vary", b"Access-Control-Request-Method"), (b"vary", b"Access-Control-Request-Headers")]
MAX_AGE = b"3600"


def header_list(value: bytes) -> bytes:
    """Access-Control-Request-Headers as go-chi/cors echoes it: names split on commas and
    spaces, each capitalised after every '-', other octets than letters, digits, '-',
    '_' and '.' dropped, joined by ", "."""
    names = []
    for raw in value.replace(b",", b" ").split():
        out = bytearray()
        upper = True
        for b in raw:
            if 0x61 <= b <= 0x7A:
                out.append(b - 32 if upper else b)
            elif 0x41 <= b <= 0x5A:
                out.append(b if upper else b + 32)
            elif b in b"-_." or 0x30 <= b <= 0x39:
                out.append(b)
            upper = b == 0x2D
        if out:
            names.append(bytes(out))
    return b", ".join(names)


def preflight_fields(origin: bytes | None, method: bytes, requested: bytes | None) -> Headers:
    """The head of the answer to a preflight (status 200)."""
    head = list(_VARY)
    method = method.upper()
    if origin and method in _METHODS:
        head += [(b"access-control-allow-origin", origin), (b"access-control-allow-methods", method)]
        names = header_list(requested) if requested else b""
        if names:
            head.append((b"access-control-allow-headers", names))
        head += [(b"access-control-allow-credentials", b"true"), (b"access-control-max-age", MAX_AGE)]
    return head


def error_fields(request_headers: Headers) -> Headers:
    """The CORS fields of a gateway error answer to a gRPC request (always a POST)."""
    for name, value in request_headers:
        if name == b"origin":
            if not value:
                break
            return [(b"vary", b"Origin"), (b"access-control-allow-origin", value), (b"access-control-allow-credentials", b"true")]
    return [(b"vary", b"Origin")]


class PreflightFirst:
    """The HTTP request handler of the gRPC port: a preflight is answered here, anything
    else goes to the gateway's handler (proxy/calls/dispatch.py)."""

    __slots__ = ("handler",)

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler

    def start(self, ex: Exchange) -> None:
        if ex.method == "OPTIONS":
            origin = method = requested = None
            for name, value in ex.headers:
                if name == b"origin":
                    origin = value
                elif name == b"access-control-request-method":
                    method = value
                elif name == b"access-control-request-headers":
                    requested = value
            if method:
                ex.start_response(200, [(b"content-length", b"0"), *preflight_fields(origin, method, requested)])
                ex.end()
                return
        self.handler.start(ex)
