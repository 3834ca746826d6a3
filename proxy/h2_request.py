"""The header block of one inbound HTTP/2 request, and its trailers: checked against
RFC 9113 8.2 and 8.3 in one pass, and split into what the server driver needs.

h2 can check inbound headers itself, but does it as a chain of seven generators with
a Python loop over every octet of every name and value: a tenth of the server's time
per request. The server turns h2's check off and calls `read_request` and
`check_trailers` instead. The rules are h2's own (`h2.utilities.validate_headers` for
a received request, which tests/proxy/test_h2_fields.py compares against), done with
C-level scans, and a name or value already found valid is remembered (a client
repeats them; a bounded set, emptied when full):

- names: not empty, no octet 0x00-0x20, 0x41-0x5a (upper case), 0x7f-0xff, and no
  ':' except the leading one of a pseudo-header;
- values: no NUL, CR or LF anywhere (the HTTP/1.1 head to the instance is built from
  them), no leading or trailing SP or HTAB;
- no connection-specific field (connection, keep-alive, proxy-connection,
  transfer-encoding, upgrade); `te` only as "trailers";
- pseudo-headers: only :method :scheme :authority :path :protocol, each at most once,
  all before the first regular field; :method always; :scheme and :path unless a
  plain CONNECT (which must have neither); :protocol only with CONNECT; :path not
  empty; no pseudo-header at all in trailers;
- :authority or host present, and equal when both are (at most one host).

A request's cookie fields are joined into one, last (RFC 9113 8.2.3: what an HTTP/1.1
instance must get), and checked joined, as h2's normalisation did before its check.

A block that breaks a rule raises `Malformed`; the server answers it as a stream error
(RST_STREAM PROTOCOL_ERROR, RFC 9113 8.1.1), so other streams on the connection go on.
"""

from __future__ import annotations

import re

Headers = list[tuple[bytes, bytes]]

_CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
_BAD_NAME_OCTET = re.compile(rb"[^\x21-\x39\x3b-\x40\x5b-\x7e]").search
_BAD_VALUE_OCTET = re.compile(rb"[\x00\r\n]").search
_WHITESPACE = (b" ", b"\t")
_MEMO_MAX = 2048
_MEMO_VALUE_LEN = 256

_good_names: set[bytes] = set()
_good_values: set[bytes] = set()


class Malformed(Exception):
    """The header block breaks RFC 9113 8.2/8.3 (the message says which rule)."""


def _check_name(name: bytes) -> None:
    if name in _good_names:
        return
    if not name or _BAD_NAME_OCTET(name) is not None:
        raise Malformed(f"invalid header name {name!r}")
    if name in _CONNECTION_SPECIFIC:
        raise Malformed(f"connection-specific header {name!r}")
    if len(_good_names) >= _MEMO_MAX:
        _good_names.clear()
    _good_names.add(name)


def _check_value(name: bytes, value: bytes) -> None:
    if value in _good_values:
        return
    if _BAD_VALUE_OCTET(value) is not None or value[:1] in _WHITESPACE or value[-1:] in _WHITESPACE:
        raise Malformed(f"invalid value for header {name!r}")
    if len(value) <= _MEMO_VALUE_LEN:
        if len(_good_values) >= _MEMO_MAX:
            _good_values.clear()
        _good_values.add(value)


_REQUEST_PSEUDO = frozenset({b":method", b":path", b":authority", b":scheme", b":protocol"})


def read_request(headers: Headers) -> tuple[bytes, bytes, bytes, bool, Headers, int]:
    """(method, path, authority, is_grpc, regular fields, header list size) of a valid
    request block; raises Malformed. The size is RFC 9113 6.5.2's (32 per field)."""
    pseudo: dict[bytes, bytes] = {}
    host = None
    grpc = False
    fields: Headers = []
    cookies: list[bytes] | None = None
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            if fields:
                raise Malformed(f"pseudo-header {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise Malformed(f"pseudo-header {name!r} not allowed in a request")
            if name in pseudo:
                raise Malformed(f"duplicate {name.decode()}")
            pseudo[name] = value
            _check_value(name, value)
            continue
        if name == b"cookie":  # checked once joined, as h2 does
            if cookies is None:
                cookies = []
            cookies.append(value)
            continue
        _check_name(name)
        _check_value(name, value)
        if name == b"content-type":
            grpc = grpc or value[:16] == b"application/grpc"
        elif name == b"host":
            if host is not None:
                raise Malformed("more than one host header")
            host = value
        elif name == b"te" and value.lower() != b"trailers":
            raise Malformed("te other than trailers")
        fields.append((name, value))
    if cookies is not None:
        cookie = b"; ".join(cookies)
        _check_value(b"cookie", cookie)
        fields.append((b"cookie", cookie))
    method, path, authority = pseudo.get(b":method"), pseudo.get(b":path"), pseudo.get(b":authority")
    scheme, protocol = pseudo.get(b":scheme"), pseudo.get(b":protocol")
    if method is None:
        raise Malformed("no :method")
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None:
            raise Malformed("CONNECT with :scheme or :path")
    elif protocol is not None and method != b"CONNECT":
        raise Malformed(":protocol without CONNECT")
    elif scheme is None or path is None:
        raise Malformed("no :scheme or :path")
    if path is not None and not path:
        raise Malformed("empty :path")
    if authority is None:
        if host is None:
            raise Malformed("neither :authority nor host")
        authority = host
    elif host is not None and host != authority:
        raise Malformed(":authority and host differ")
    return method, path or b"", authority, grpc, fields, size


def check_trailers(headers: Headers) -> None:
    """Raise Malformed unless `headers` is a valid trailer block."""
    cookies = []
    for name, value in headers:
        if name[:1] == b":":
            raise Malformed(f"pseudo-header {name!r} in trailers")
        if name == b"cookie":
            cookies.append(value)
            continue
        _check_name(name)
        _check_value(name, value)
        if name == b"te" and value.lower() != b"trailers":
            raise Malformed("te other than trailers")
    if cookies:
        _check_value(b"cookie", b"; ".join(cookies))
