"""Request ids and per-connection slot owners, shared by every client protocol (the
HTTP forwarder and the gRPC relay), so ids look alike in logs and instance headers."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class ClientStream(Protocol):
    """What slot_owner reads of a request's client side (an Exchange or a gRPC stream)."""

    @property
    def http2(self) -> bool: ...
    @property
    def conn(self) -> object: ...


def slot_owner(stream: ClientStream) -> object:
    """Whose per-connection slot count a request joins (Limiter, `per_connection`): its
    client connection when that multiplexes requests (HTTP/2, gRPC), else None (HTTP/1.1
    answers one request at a time)."""
    return stream.conn if stream.http2 else None


# A version 4 UUID's fixed bits in a 128-bit draw: the version nibble (4) and the variant's top two bits (10).
_FIXED_CLEAR = ((1 << 128) - 1) ^ (0xF << 76 | 0xC << 60)
_FIXED_SET = 0x4 << 76 | 0x8 << 60


def new_request_id(_bits: Callable[[int], int] = random.getrandbits) -> bytes:
    """A random (version 4) UUID; `random` rather than os.urandom: no syscall per request,
    and the id is not a secret (pexec results are still bound to the caller's key).
    This runs for every request: one draw, one hex conversion (grouped by 4 digits,
    8-4-4-4-12 is those groups with three dashes left out) and no %-formatting, which
    cost half again as much."""
    h = (_bits(128) & _FIXED_CLEAR | _FIXED_SET).to_bytes(16, "big").hex("-", 2).encode()
    return h[:4] + h[5:29] + h[30:34] + h[35:]
