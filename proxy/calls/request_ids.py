"""Request ids and per-connection slot owners, shared by every client protocol (the
HTTP forwarder and the gRPC relay), so ids look alike in logs and instance headers."""

from __future__ import annotations

import os
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


# A version 4 UUID's fixed bits, per byte of its 16: the version nibble (4) is the high
# nibble of byte 6, the variant's top two bits (10) those of byte 8.
_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
_BATCH = 128  # ids drawn and formatted at once
_ID_LEN = 36

# ids drawn and not handed out yet; the list is changed in place, never rebound (a module
# global assigned per request would cost every global lookup of the module its cache)
_ready: list[bytes] = []


def _draw(bits: Callable[[int], int], n: int) -> bytes:
    """`n` random (version 4) UUIDs in their text form, back to back, from one draw of
    bits (in order: the draw's first 128 bits are the first id's), formatted with a few
    operations over the whole batch rather than a few per id."""
    raw = bytearray(bits(128 * n).to_bytes(16 * n, "big"))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    # groups of 4 hex digits, a dash after each: 40 characters per id, of which the
    # dashes after groups 1, 6, 7 and 8 go (8-4-4-4-12 keeps those after 2, 3, 4 and 5),
    # the last one of each id first, so that the earlier positions stay where they are
    text = bytearray(raw.hex("-", 2).encode())
    text.append(0x2D)
    del text[39::40]
    del text[34::39]
    del text[29::38]
    del text[4::37]
    return bytes(text)


def new_request_id(_bits: Callable[[int], int] | None = None) -> bytes:
    """A random (version 4) UUID; `random` rather than os.urandom: no syscall per request,
    and the id is not a secret (pexec results are still bound to the caller's key).
    This runs for every request, so ids are drawn and formatted in batches of _BATCH
    and each request takes one (formatting one id cost ~7,000 instructions).
    `_bits`: where the bits come from (a test's), for one id made at once."""
    if _bits is not None:
        return _draw(_bits, 1)
    if not _ready:
        text = _draw(random.getrandbits, _BATCH)
        _ready.extend([text[at : at + _ID_LEN] for at in range(0, len(text), _ID_LEN)])
    return _ready.pop()


def _forget_batch() -> None:
    """A forked child draws its own ids (random reseeds there too): a batch drawn before
    the fork would be handed out by parent and child alike."""
    _ready.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_batch)
