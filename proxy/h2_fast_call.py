"""The fast path for HTTP/2 clients: FastCall (proxy/fast_call.py) with an h2 stream as
the client leg.

What one batch of instance bytes produced leaves at `flush`: the head (HEADERS, with
END_STREAM when the response turned out to be empty), then the body bytes, queued in
the engine, which frames them as the client's windows allow. While the stream holds
more than the engine's high-water mark (or the client's socket is full), reading from
the instance pauses, and the connection's writable signal resumes it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from ngh2 import NeverIndexedHeader

from fngate.proxy.exchange import ClientGone
from fngate.proxy.fast_call import FastCall
from fngate.proxy.h2_stream import STATUS_VALUES
from fngate.proxy.headers import client_head_fields

if TYPE_CHECKING:
    from fngate.proxy.h2 import Header
    from fngate.proxy.h2_stream import H2Exchange


class H2FastCall(FastCall):
    __slots__ = ("head",)

    head: list[Header] | None

    @property
    def stream(self) -> H2Exchange:
        return cast("H2Exchange", self.ex)

    def _client_head(self, status: int, lines: bytes, framed: bool, nvcf_status: bytes) -> None:
        ex = self.stream
        ex.response_started = True
        headers: list[Header] = [(b":status", STATUS_VALUES.get(status) or b"%d" % status), *client_head_fields(lines)]
        headers.append(NeverIndexedHeader(b"nvcf-reqid", self.request_id))  # new every time: not indexed
        headers.append((b"nvcf-status", nvcf_status))
        if status in (204, 304):
            ex.no_body = True
        self.head = headers

    def on_body(self, data: bytes) -> None:
        if not self.stream.no_body:
            self.out.append(data)

    def on_end(self) -> None:
        self.ended = True

    def flush(self) -> None:
        if self.closed:
            return
        ex = self.stream
        server = ex.conn
        sid = ex.sid
        out = self.out
        ended = self.ended
        head = getattr(self, "head", None)
        try:
            if head is not None:
                self.head = None
                server.send_headers(sid, head, ended and not out)
                if ended and not out:  # END_STREAM went with the head
                    self._done()
                    return
            if out or ended:
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                if not server.queue_data(sid, data, ended):
                    raise ClientGone()
        except ClientGone:
            self.client_gone()
            return
        if ended:
            self._done()
            return
        if self.streaming:
            self.last = time.monotonic() if self.loop is None else self.loop.time()
        transport = self.conn.transport
        if transport is not None and server.backlogged(sid):  # the client takes no more for now: stop reading the instance
            transport.pause_reading()
            server.when_writable(sid, self._client_writable_again)

    def _done(self) -> None:
        self.stream.finished = True
        self._finish(self.status)

    def _client_writable_again(self) -> None:
        transport = self.conn.transport
        if not self.closed and transport is not None:
            self.last = time.monotonic() if self.loop is None else self.loop.time()
            transport.resume_reading()
