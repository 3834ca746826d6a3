"""The HTTP/2 engine of both legs: libnghttp2 through ngh2 (sans-IO), configured once here.

nghttp2 does the framing, HPACK, flow-control accounting, the RFC 9113 checks of every
received field (a malformed request gets RST_STREAM PROTOCOL_ERROR before the gateway
sees it) and these protections, each with the limit chosen below:

- frame length, checked at the 9-byte frame header against our SETTINGS_MAX_FRAME_SIZE
  (16 KiB): GOAWAY FRAME_SIZE_ERROR before any of the payload is buffered;
- stream resets (rapid reset, CVE-2023-44487): a token bucket of RST_STREAM frames per
  connection; past it, GOAWAY;
- glitches (frames that do nothing useful: empty DATA, PRIORITY or unknown frames,
  streams that had to be reset for bad headers): a token bucket; past it, GOAWAY
  ENHANCE_YOUR_CALM;
- queued PING and SETTINGS acknowledgements (a flood from a client that never reads):
  past `max_outbound_ack`, a fatal error;
- CONTINUATION frames after one HEADERS: past `max_continuations`, a fatal error;
- decoded header list size and field count: past them, a fatal error (so the limit
  here is a hard cap well above the advertised SETTINGS_MAX_HEADER_LIST_SIZE: a block
  between the two is decoded and answered 431 on its stream by the server driver).

What ngh2 0.3.0 does not do, and this module covers: a fatal error (flood, too many
CONTINUATIONs, a header list past the hard cap) destroys the ngh2 connection at once,
with no GOAWAY queued and none possible (`data_to_send` raises afterwards), so
`goaway_frame` builds that frame by hand for the driver to write before it closes.
"""

from __future__ import annotations

import struct

import ngh2
from ngh2 import Configuration, ErrorCode, Role, Setting

# Per-connection receive budgets (nghttp2's own defaults, stated here so they are ours).
RESET_BURST, RESET_RATE = 1000, 33  # RST_STREAM frames: burst, then per second
GLITCH_BURST, GLITCH_RATE = 1000, 100  # glitches: burst, then per second
MAX_OUTBOUND_ACK = 1000  # queued SETTINGS/PING acknowledgements
MAX_CONTINUATIONS = 8  # CONTINUATION frames after one HEADERS
MAX_HEADER_COUNT = 1024  # fields in one received header block
HEADER_HARD_CAP = 4  # decoded header list cap, in multiples of the advertised limit
MAX_FRAME_SIZE = 16384  # SETTINGS_MAX_FRAME_SIZE we advertise (the RFC's minimum)


def server_connection(max_header_bytes: int) -> ngh2.Connection:
    """A server connection whose receive windows the driver opens as data is consumed."""
    return ngh2.Connection(Role.SERVER, _configuration(max_header_bytes))


def client_connection(max_header_bytes: int = 64 * 1024) -> ngh2.Connection:
    """A client connection (the instance leg) with the same limits on what it receives."""
    return ngh2.Connection(Role.CLIENT, _configuration(max_header_bytes))


def _configuration(max_header_bytes: int) -> Configuration:
    return Configuration(
        auto_window_update=False,
        stream_reset_rate_limit=(RESET_BURST, RESET_RATE),
        glitch_rate_limit=(GLITCH_BURST, GLITCH_RATE),
        max_outbound_ack=MAX_OUTBOUND_ACK,
        max_continuations=MAX_CONTINUATIONS,
        max_inbound_header_list_size=max_header_bytes * HEADER_HARD_CAP,
        max_inbound_header_count=MAX_HEADER_COUNT,
    )


def server_settings(max_concurrent_streams: int, stream_window: int, max_header_bytes: int) -> dict[int, int]:
    return {
        Setting.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
        Setting.INITIAL_WINDOW_SIZE: stream_window,
        Setting.MAX_HEADER_LIST_SIZE: max_header_bytes,
        Setting.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
    }


def goaway_frame(error_code: int, last_stream_id: int = 0) -> bytes:
    """A GOAWAY frame (RFC 9113 6.8), for a connection ngh2 could no longer serialise."""
    return b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + struct.pack(">II", last_stream_id & 0x7FFFFFFF, error_code)


def fatal_code(exc: Exception) -> int:
    """The GOAWAY error code for an exception `receive_data` raised."""
    if isinstance(exc, ngh2.DenialOfServiceError):
        return int(ErrorCode.ENHANCE_YOUR_CALM)
    return int(ErrorCode.PROTOCOL_ERROR)
