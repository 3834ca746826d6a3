"""The fast path for HTTP/2 clients: FastCall (proxy/fast_call.py) with an h2 stream as
the client leg.

The response goes out through the connection's h2 state machine: HEADERS at the head,
DATA as body bytes arrive, within the stream's and the connection's flow-control
windows. Bytes the windows do not admit yet wait here, reading from the instance
pauses, and the connection's window signal (or its drain, when the socket buffer is
full) resumes both. The last DATA frame carries END_STREAM when the body ends in the
same batch, else an empty one does.
"""

from __future__ import annotations

import h2.exceptions
from hpack import NeverIndexedHeaderTuple

from fngate.proxy.fast_call import FastCall
from fngate.proxy.h2_stream import STATUS_VALUES
from fngate.proxy.headers import client_head_fields

_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)


class H2FastCall(FastCall):
    __slots__ = ()

    def _client_head(self, status: int, lines: bytes, framed: bool, nvcf_status: bytes) -> None:
        ex = self.ex
        ex.response_started = True
        headers = [(b":status", STATUS_VALUES.get(status) or b"%d" % status), *client_head_fields(lines)]
        headers.append(NeverIndexedHeaderTuple(b"nvcf-reqid", self.request_id))  # new every time: not indexed
        headers.append((b"nvcf-status", nvcf_status))
        if status in (204, 304) or status < 200:
            ex.no_body = True
        try:
            ex.conn.h2.send_headers(ex.sid, headers)
        except _GONE:
            self.client_gone()
            return
        ex.conn._flush_soon()

    def on_body(self, data: bytes) -> None:
        if not self.ex.no_body:
            self.out.append(data)

    def on_end(self) -> None:
        self.ended = True

    def flush(self) -> None:
        if self.closed:
            return
        ex = self.ex
        server = ex.conn
        if server.closed:
            self.client_gone()
            return
        h2c = server.h2
        sid = ex.sid
        out = self.out
        ended = self.ended
        sent_end = False
        try:
            while out:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    break
                data = out[0]
                if len(data) > window:
                    out[0] = data[window:]
                    data = data[:window]
                else:
                    del out[0]
                sent_end = ended and not out
                h2c.send_data(sid, data, end_stream=sent_end)
            if ended and not out and not sent_end:
                h2c.end_stream(sid)  # no bytes left to carry END_STREAM
        except _GONE:
            self.client_gone()
            return
        server._flush_soon()
        if ended and not out:
            ex.finished = True
            server._maybe_forget(sid)
            self._finish(self.status)
            return
        if self.streaming:
            self.last = self.loop.time()
        if out or server._write_paused:  # the client takes no more for now: stop reading the instance
            self.conn.transport.pause_reading()
            if out:
                w = server._window_waiters.get(sid)
                if w is None:
                    w = server._window_waiters[sid] = self.loop.create_future()
            else:
                w = server._drain
                if w is None:
                    w = server._drain = self.loop.create_future()
            w.add_done_callback(self._client_writable_cb)

    def _client_writable_cb(self, fut) -> None:
        if not fut.cancelled():
            fut.exception()  # a reset stream fails the waiter: seen here, not logged as unretrieved
        if not self.closed:
            self.conn.transport.resume_reading()
            self.flush()
