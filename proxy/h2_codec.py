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
- A header block that leaves the decoder's dynamic table as it found it (all its
  fields indexed, or literals without indexing) decodes to the same fields for as
  long as the table stays the same, and clients send the same block again and again
  (h2load, a gRPC stub calling one method). So each connection's decoder remembers a
  few such blocks, keyed by the block's bytes and the table's version (bumped by
  every change to the table). The list-size limit and the table-size check are
  applied to a remembered block as to a decoded one.
- hpack logs every integer it codes at debug level (~30 calls per request), and h2
  formats every received frame for a trace log it then discards (flags sorted, body
  re-serialised): the gateway never shows either, so hpack gets a logger that does
  nothing and frames a repr that only names them.
"""

from __future__ import annotations

import functools

import hpack.hpack
import hyperframe.frame
from h2.connection import H2Connection
from hpack.hpack import _to_bytes
from hpack.struct import HeaderTuple
from hpack.table import HeaderTable

_MEMO_MAX_LEN = 256  # coded strings longer than this (rare, often unique) are not kept
_MEMO_ENTRIES = 4096  # at most ~1 MiB of remembered strings

_decode_huffman = hpack.hpack.decode_huffman
_memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(_decode_huffman)


def decode_huffman(data: bytes) -> bytes:
    return _memo(data) if len(data) <= _MEMO_MAX_LEN else _decode_huffman(data)


class _Silent:
    def debug(self, *args: object, **kwargs: object) -> None:
        pass


def _frame_repr(frame: hyperframe.frame.Frame) -> str:
    return f"{type(frame).__name__}(stream_id={frame.stream_id})"


hpack.hpack.decode_huffman = decode_huffman
hpack.hpack.log = _Silent()
hyperframe.frame.Frame.__repr__ = _frame_repr  # type: ignore[method-assign]


class _VersionedTable(HeaderTable):
    """A dynamic table that counts its changes (entries added, size changed)."""

    version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    def _set_maxsize(self, value: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, value)  # type: ignore[attr-defined]

    maxsize = property(HeaderTable.maxsize.fget, _set_maxsize)  # type: ignore[assignment]


class PlainEncoder(hpack.Encoder):
    """An HPACK encoder that sends string literals without Huffman coding, and
    remembers the index it found for a field until its table changes."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _VersionedTable()
        self._indexed: dict[tuple[bytes, bytes], bytes] = {}
        self._indexed_version = 0

    def encode(self, headers, huffman: bool = False) -> bytes:  # type: ignore[override]
        table = self.header_table
        if table.resized or isinstance(headers, dict):  # a size update to write first, or a dict: hpack's way
            return super().encode(headers, huffman=False)
        block = []
        for header in headers:
            name, value = header[0], header[1]
            if isinstance(header, HeaderTuple):
                sensitive = not header.indexable
            else:
                sensitive = len(header) > 2 and bool(header[2])
            if type(name) is not bytes or type(value) is not bytes:
                name, value = _to_bytes(name), _to_bytes(value)
            if self._indexed_version != table.version:
                self._indexed = {}
                self._indexed_version = table.version
            field = self._indexed.get((name, value))
            if field is None or sensitive:
                field = self.add((name, value), sensitive, False)
                # an indexed field (top bit set) left the table as it was
                if field[0] & 0x80 and self._indexed_version == table.version:
                    self._indexed[(name, value)] = field
            block.append(field)
        return b"".join(block)


_BLOCKS_KEPT = 8  # per connection: a client's distinct repeated blocks are few
_BLOCK_MAX_LEN = 512


class MemoDecoder(hpack.Decoder):
    """An HPACK decoder that remembers blocks which left its table unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _VersionedTable()
        self.max_allowed_table_size = self.header_table.maxsize
        self._blocks: dict[tuple[bytes, int], tuple[list, int]] = {}

    def decode(self, data: bytes, raw: bool = False):  # type: ignore[override]
        table = self.header_table
        version = table.version
        if not raw or type(data) is not bytes or len(data) > _BLOCK_MAX_LEN:
            return super().decode(data, raw)
        hit = self._blocks.get((data, version))
        if hit is not None and hit[1] <= self.max_header_list_size and table.maxsize <= self.max_allowed_table_size:
            return list(hit[0])
        headers = super().decode(data, raw)
        if table.version == version:
            if len(self._blocks) >= _BLOCKS_KEPT:
                self._blocks.clear()
            self._blocks[(data, version)] = (list(headers), sum(32 + len(n) + len(v) for n, v in headers))
        return headers


def install(conn: H2Connection) -> H2Connection:
    """Give a new connection (nothing coded yet) the plain encoder and the memo decoder."""
    conn.encoder = PlainEncoder()
    conn.decoder = MemoDecoder()
    return conn
