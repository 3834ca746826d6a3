"""HTTP/2 frames written by hand (RFC 9113 4.1, HPACK literals per RFC 7541 6.2.2), for
attack and transcript tests: what goes on the wire is exactly what the test says."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 6, 7, 8, 11


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def settings(**values: int) -> bytes:
    ids = {"max_concurrent_streams": 3, "initial_window_size": 4, "max_frame_size": 5, "max_header_list_size": 6}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def _length(n: int, prefix_bits: int = 7) -> bytes:
    """An HPACK integer with a `prefix_bits` prefix (the Huffman bit left clear)."""
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([n])
    out = [limit]
    n -= limit
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    out.append(n)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing, new name, no Huffman coding."""
    return b"\x00" + _length(len(name)) + name + _length(len(value)) + value


def block(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(literal(n, v) for n, v in fields)


def request_fields(method: bytes = b"GET", path: bytes = b"/", authority: bytes = b"fn.example", extra=()) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"http"), (b":path", path), (b":authority", authority), *extra]


def headers(stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool = True) -> bytes:
    """One HEADERS frame (END_HEADERS), or HEADERS plus CONTINUATIONs past 16 KiB."""
    hb = block(fields)
    flags = END_STREAM if end_stream else 0
    if len(hb) <= 16384:
        return frame(HEADERS, flags | END_HEADERS, stream_id, hb)
    parts = [hb[i : i + 16384] for i in range(0, len(hb), 16384)]
    out = frame(HEADERS, flags, stream_id, parts[0])
    for i, part in enumerate(parts[1:], 1):
        out += frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, stream_id, part)
    return out


def rst_stream(stream_id: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def ping(opaque: bytes = b"12345678") -> bytes:
    return frame(PING, 0, 0, opaque)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def parse(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of every whole frame in `data`."""
    out = []
    i = 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i : i + 3], "big")
        if i + 9 + n > len(data):
            break
        out.append((data[i + 3], data[i + 4], int.from_bytes(data[i + 5 : i + 9], "big") & 0x7FFFFFFF, data[i + 9 : i + 9 + n]))
        i += 9 + n
    return out


def goaway_of(data: bytes) -> tuple[int, int] | None:
    """(last stream id, error code) of the first GOAWAY in `data`, else None."""
    for kind, _, _, payload in parse(data):
        if kind == GOAWAY:
            return int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")
    return None


def resets_of(data: bytes) -> dict[int, int]:
    """stream id -> RST_STREAM error code, for every reset in `data`."""
    return {sid: int.from_bytes(p[:4], "big") for kind, _, sid, p in parse(data) if kind == RST_STREAM}
