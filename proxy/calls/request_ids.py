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


def new_request_id(_bits: Callable[[int], int] = random.getrandbits) -> bytes:
    """A random (version 4) UUID; `random` rather than os.urandom: no syscall per request,
    and the id is not a secret (pexec results are still bound to the caller's key).
    One draw and one format: this runs for every request."""
    n = _bits(122)
    return b"%08x-%04x-4%03x-%04x-%012x" % (n >> 90, n >> 74 & 0xFFFF, n >> 62 & 0xFFF, 0x8000 | n >> 48 & 0x3FFF, n & 0xFFFFFFFFFFFF)
