"""HPACK as the gateway uses it: the same wire format, less Python work per header.

Used by both HTTP/2 legs (proxy/h2.py towards clients, proxy/upstream/h2_client.py
towards instances); `install(conn)` swaps the encoder of a fresh h2 connection.

- What we send is not Huffman-coded. RFC 7541 5.2 lets every string literal be sent
  raw; hpack's Huffman coder is pure Python, the single largest cost of sending
  HEADERS, and on loopback or a LAN the bytes it saves do not matter.
- What we receive may be Huffman-coded (clients and grpcio do it). The same strings
  arrive again and again (an `authorization` value a client keeps unindexed, the
  values of a header it never indexes), so short ones are decoded once and
  remembered. Decoding is a pure function of the coded bytes, and a bad code still
  raises on every occurrence (a failed decode is never remembered).
- hpack logs every integer it codes at debug level (~30 calls per request); the
  gateway never shows that output, so hpack gets a logger that does nothing.
"""

from __future__ import annotations

import functools

import hpack.hpack
from h2.connection import H2Connection

_MEMO_MAX_LEN = 256  # coded strings longer than this (rare, often unique) are not kept
_MEMO_ENTRIES = 4096  # at most ~1 MiB of remembered strings

_decode_huffman = hpack.hpack.decode_huffman
_memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(_decode_huffman)


def decode_huffman(data: bytes) -> bytes:
    return _memo(data) if len(data) <= _MEMO_MAX_LEN else _decode_huffman(data)


class _Silent:
    def debug(self, *args: object, **kwargs: object) -> None:
        pass


hpack.hpack.decode_huffman = decode_huffman
hpack.hpack.log = _Silent()


class PlainEncoder(hpack.Encoder):
    """An HPACK encoder that sends string literals without Huffman coding."""

    def encode(self, headers, huffman: bool = False) -> bytes:  # type: ignore[override]
        return super().encode(headers, huffman=False)


def install(conn: H2Connection) -> H2Connection:
    """Give a new connection (nothing encoded yet) the plain encoder."""
    conn.encoder = PlainEncoder()
    return conn
