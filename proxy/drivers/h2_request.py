"""The header block of one inbound HTTP/2 request, split into what the server driver needs.

nghttp2 has checked the block against RFC 9113 8.2 and 8.3 before the driver sees it
(names are lower-case tokens, values carry no control octet, NUL, CR or LF and no
surrounding whitespace, pseudo-headers are the allowed ones, each once, before the
regular fields, :method/:scheme/:path present as required, :path is "/..." or "*",
:method a token, no connection-specific field, `te` only "trailers"): a block that
breaks one never becomes an event, its stream gets RST_STREAM PROTOCOL_ERROR. So what
is left here is what nghttp2 does not do:

- :authority or host present, and equal when both are (at most one host), since the
  instance's HTTP/1.1 Host comes from them;
- the request's cookie fields joined into one, last (RFC 9113 8.2.3: what an HTTP/1.1
  instance must get);
- the header list size (RFC 9113 6.5.2: 32 octets per field), for the driver's 431.
"""

from __future__ import annotations

from collections.abc import Sequence

Headers = list[tuple[bytes, bytes]]


class Malformed(Exception):
    """The header block breaks a rule nghttp2 leaves to the application."""


def read_request(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, bytes, bytes, bool, Headers, int]:
    """(method, path, authority, is_grpc, regular fields, header list size) of a
    request block nghttp2 accepted; raises Malformed."""
    method = path = authority = host = None
    grpc = False
    fields: Headers = []
    cookies: list[bytes] | None = None
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"cookie":
            if cookies is None:
                cookies = []
            cookies.append(value)
            continue
        if name == b"content-type":
            grpc = grpc or value[:16] == b"application/grpc"
        elif name == b"host":
            if host is not None:
                raise Malformed("more than one host header")
            host = value
        fields.append((name, value))
    if cookies is not None:
        fields.append((b"cookie", b"; ".join(cookies)))
    if authority is None:
        if host is None:
            raise Malformed("neither :authority nor host")
        authority = host
    elif host is not None and host != authority:
        raise Malformed(":authority and host differ")
    if method is None:  # nghttp2 requires it; kept for a block built by hand
        raise Malformed("no :method")
    return method, path or b"", authority, grpc, fields, size
