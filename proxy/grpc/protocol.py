"""gRPC policy for the gateway: detection, deadlines, status codes, trailers-only errors.

The gateway relays gRPC at the HTTP/2 level and never decodes protobuf; this module
holds the few gRPC rules it does need: what a gRPC request looks like, the
`grpc-timeout` header, the status codes, how to answer with an error the gateway
itself produced (a trailers-only response) and how to check the 5-byte message
prefixes as they stream past.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import IntEnum

from ngh2 import NeverIndexedHeader


class Status(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def status_of(exc: BaseException) -> tuple[Status, str]:
    """The gRPC status and message for any error the gateway raises.

    Every gateway error carries its own `grpc_status` beside its HTTP status
    (proxy/errors.py, and UpstreamLost of the instance pool); anything else is a bug
    in the gateway, answered INTERNAL."""
    message = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    status = getattr(exc, "grpc_status", None)
    if status is None:
        return Status.INTERNAL, message
    return Status(status), message


# -- detection ---------------------------------------------------------------------------


def is_grpc_content_type(value: bytes | str | None) -> bool:
    """application/grpc, application/grpc+proto, application/grpc;params... (not grpc-web)."""
    if not value:
        return False
    if isinstance(value, str):
        value = value.encode("latin-1")
    value = value.lower()
    return value.startswith(b"application/grpc") and value[16:17] in (b"", b"+", b";")


# -- grpc-timeout --------------------------------------------------------------------------

_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_FORMAT_UNITS = ((1e9, "n"), (1e6, "u"), (1e3, "m"), (1.0, "S"), (1 / 60, "M"), (1 / 3600, "H"))


def parse_timeout(value: bytes | str) -> float:
    """grpc-timeout ("1-8 digits" + unit) in seconds; ValueError when malformed."""
    if isinstance(value, str):
        value = value.encode("latin-1")
    digits, unit = value[:-1], value[-1:]
    if not 1 <= len(digits) <= 8 or not digits.isdigit() or unit not in _UNITS:
        raise ValueError(f"invalid grpc-timeout {value!r}")
    return int(digits) * _UNITS[unit]


def format_timeout(seconds: float) -> str:
    """The shortest-unit grpc-timeout that fits in 8 digits, rounded up (never shorter)."""
    seconds = max(seconds, 0.0)
    for scale, unit in _FORMAT_UNITS:
        amount = math.ceil(seconds * scale)
        if amount < 100_000_000:
            return f"{amount}{unit}"
    return "99999999H"


# -- grpc-message ---------------------------------------------------------------------------


def encode_message(message: str) -> str:
    """Percent-encode a grpc-message value (everything outside printable ASCII, and '%')."""
    raw = message.encode("utf-8")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return message
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)


def status_trailers(status: Status, message: str) -> list[tuple[bytes, bytes]]:
    """The trailers that end a call the gateway stops after the response started."""
    trailers = [(b"grpc-status", b"%d" % status)]
    if message:
        trailers.append((b"grpc-message", encode_message(message).encode("ascii")))
    return trailers


def trailers_only(status: Status, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> list[tuple[bytes, bytes]]:
    """A complete trailers-only response: one HEADERS frame, sent with END_STREAM."""
    return [(b":status", b"200"), (b"content-type", b"application/grpc"), *status_trailers(status, message), *extra]


def error_headers(
    exc: BaseException, request_id: bytes, responded: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Status, list[tuple[bytes, bytes]]]:
    """The one place a gateway error becomes a gRPC answer (for the relay and for the HTTP/2
    driver's refusals): its status, and the fields to send, a trailers-only response
    (HEADERS with END_STREAM, naming the request in nvcf-reqid, plus `extra`) before the
    response head, trailers after it."""
    status, message = status_of(exc)
    if responded:
        return status, status_trailers(status, message)
    return status, trailers_only(status, message, (NeverIndexedHeader(b"nvcf-reqid", request_id), *extra))


# -- message framing -----------------------------------------------------------------------


class FramingError(Exception):
    """The DATA of a gRPC stream is not a sequence of length-prefixed messages."""


class MessageFraming:
    """Follows the 5-byte gRPC message prefixes across DATA frames without copying.

    Only the prefix bytes are looked at; message bodies are skipped by counting, so a
    tens-of-MB message costs a subtraction per frame."""

    __slots__ = ("_need", "_prefix", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._need = 0  # body bytes still to skip of the current message
        self._prefix = b""  # a prefix split across frames

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._need:
                step = min(self._need, n - i)
                self._need -= step
                i += step
                continue
            take = 5 - len(self._prefix)
            self._prefix += data[i : i + take]
            i += take
            if len(self._prefix) < 5:
                return
            flag, length = self._prefix[0], int.from_bytes(self._prefix[1:5], "big")
            self._prefix = b""
            if flag > 1:
                raise FramingError(f"invalid gRPC compressed flag {flag}")
            if length > self.max_message:
                raise FramingError(f"gRPC message of {length} bytes exceeds the limit of {self.max_message}")
            self._need = length

    def at_boundary(self) -> bool:
        """True when the stream may end here (no partial message)."""
        return not self._need and not self._prefix
