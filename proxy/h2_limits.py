"""An h2 server connection that refuses one stream, not the whole connection, when a
client opens more than SETTINGS_MAX_CONCURRENT_STREAMS, or sends a header block larger
than SETTINGS_MAX_HEADER_LIST_SIZE.

RFC 9113 5.1.2 allows either a stream error (PROTOCOL_ERROR or REFUSED_STREAM) or a
connection error; h2 chooses the connection error, which would fail every other call
on a multiplexed gRPC connection because of one eager client. Here the excess HEADERS
block is still decoded (HPACK state is shared by the connection and must stay in
step), the stream is recorded as reset by us, and RST_STREAM(REFUSED_STREAM) tells
the client it may retry it. Later frames on that stream are then handled by h2's own
closed-stream rules (DATA credit returned, RST_STREAM).

Oversized header blocks: h2 makes its HPACK decoder enforce the advertised limit, and
a decoder that stops half-way leaves the connection's HPACK state unusable, so one big
request would cost every call on the connection. The decoder here accepts blocks up to
HEADER_DECODE_HEADROOM times the advertised limit; the server then refuses a stream
whose headers exceed the limit on that stream alone (see H2Server._on_request). Only a
block past the hard cap is still a connection error.

Counting open streams: h2 checks the concurrent-stream limit on every new stream by
walking its whole stream table (dropping the closed streams as it goes), an O(n) cost
per stream with n streams in flight. CheapStreamCount answers with len(streams), an
upper bound, while that is still below the limit, and walks only when the bound
reaches the limit or the table has doubled since the last walk: the limit is
enforced exactly as before, closed streams are still dropped, at an amortised O(1).
"""

from __future__ import annotations

from h2.connection import H2Connection, _decode_headers
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy
from hyperframe.frame import RstStreamFrame

HEADER_DECODE_HEADROOM = 4


class CheapStreamCount(H2Connection):
    """open_inbound_streams / open_outbound_streams without a walk per new stream; the
    figure is exact near the limit (h2 only compares it with the limit)."""

    _walk_at = 0

    def _open_streams(self, remainder: int) -> int:
        n = len(self.streams)
        outbound = remainder == int(self.config.client_side)
        limit = (self.remote_settings if outbound else self.local_settings).max_concurrent_streams
        if n + 1 <= limit and n < self._walk_at:
            return n
        count = super()._open_streams(remainder)  # walks, and drops closed streams
        self._walk_at = 2 * len(self.streams) + 16
        return count


class RefusingH2Connection(CheapStreamCount):
    def allow_header_decoding(self, advertised_limit: int) -> None:
        self.decoder.max_header_list_size = advertised_limit * HEADER_DECODE_HEADROOM

    def _local_settings_acked(self):  # type: ignore[override]
        changes = super()._local_settings_acked()  # resets the decoder to the advertised limit
        self.allow_header_decoding(self.local_settings.max_header_list_size)
        return changes

    def _receive_headers_frame(self, frame):  # type: ignore[override]
        sid = frame.stream_id
        if (
            not self.config.client_side
            and sid not in self.streams
            and sid % 2 == 1
            and sid > self.highest_inbound_stream_id
            and self.open_inbound_streams + 1 > self.local_settings.max_concurrent_streams
        ):
            _decode_headers(self.decoder, frame.data)
            self.highest_inbound_stream_id = sid
            self._closed_streams[sid] = StreamClosedBy.SEND_RST_STREAM
            refuse = RstStreamFrame(sid)
            refuse.error_code = ErrorCodes.REFUSED_STREAM
            return [refuse], []
        return super()._receive_headers_frame(frame)
