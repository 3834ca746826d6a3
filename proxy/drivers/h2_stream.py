"""One client HTTP/2 stream as the call sees it (H2Exchange, the seam of
proxy/calls/exchange.py) and as the gRPC relay sees it (H2Downstream). Both only call back
into their H2Server (proxy/drivers/h2.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from ngh2 import ErrorCode, NeverIndexedHeader

from fngate.proxy.calls.exchange import ENDED_EMPTY, ClientGone, Exchange, Headers, RequestBody
from fngate.proxy.wire.headers import HOP_BY_HOP, client_head_fields

if TYPE_CHECKING:
    from fngate.proxy.config import GatewayConfig
    from fngate.proxy.wire.stream_flow import StreamFlow

Header = tuple[bytes, bytes] | NeverIndexedHeader


class StreamHost(Protocol):
    """What a stream needs of its connection (proxy/drivers/h2.py's H2Server)."""

    closed: bool
    config: GatewayConfig
    out: StreamFlow  # the connection's queued response bytes per stream (proxy/wire/stream_flow.py)
    client_addr: str
    scheme: bytes

    def send_headers(self, sid: int, headers: Sequence[Header], end_stream: bool) -> None: ...
    def send_trailers(self, sid: int, headers: Sequence[Header]) -> None: ...
    def queue_data(self, sid: int, data: bytes, end_stream: bool) -> bool: ...
    async def send_data(self, sid: int, data: bytes, end_stream: bool) -> None: ...
    def backlogged(self, sid: int) -> bool: ...
    def when_writable(self, sid: int, callback: Callable[[], None]) -> None: ...
    def reset(self, sid: int, code: int) -> None: ...
    def ack(self, sid: int, n: int) -> None: ...


STATUS_VALUES = {s: b"%d" % s for s in range(100, 600)}
_UNIQUE = frozenset({b"nvcf-reqid", b"date"})  # a new value per response: kept out of the HPACK table


class H2Exchange(Exchange):
    """One client stream as an Exchange. What the call sends between two flushes leaves
    at `flush`: the head (HEADERS, with END_STREAM when the response turned out empty),
    then the body bytes, queued in the engine, which frames them as the client's
    windows allow."""

    __slots__ = ("__weakref__", "_head", "_out", "conn", "no_body", "sid")

    conn: StreamHost

    def __init__(
        self, conn: StreamHost, sid: int, method: str, target: bytes, headers: Headers, authority: bytes, ended: bool = False
    ) -> None:
        # Exchange's fields, set here rather than through super().__init__: once per request
        self.method = method
        self.target = target
        self.headers = headers
        self.authority = authority
        self.client_addr = conn.client_addr
        self.http2 = True
        self.body = ENDED_EMPTY if ended else RequestBody(conn.config.max_body_buffer, lambda n: conn.ack(sid, n))
        self.on_disconnect = None
        self.response_started = False
        self.finished = False
        self.extra_headers = None
        self.expect_continue = False
        self.scheme = conn.scheme
        self.conn = conn
        self.sid = sid
        self._head: list[Header] | None = None
        self._out: list[bytes] = []
        self.no_body = method == "HEAD"

    def start_response(self, status: int, headers: Headers) -> None:
        out: list[Header] = [(b":status", STATUS_VALUES.get(status) or b"%d" % status)]
        for n, v in headers:
            if n in _UNIQUE:
                out.append(NeverIndexedHeader(n, v))
            elif n not in HOP_BY_HOP:
                out.append((n, v))
        self._started(status, out)

    def start_response_block(self, status: int, lines: bytes, framed: bool, request_id: bytes, nvcf_status: bytes) -> None:
        out: list[Header] = [(b":status", STATUS_VALUES.get(status) or b"%d" % status), *client_head_fields(lines)]
        out.append(NeverIndexedHeader(b"nvcf-reqid", request_id))  # new every time: not indexed
        out.append((b"nvcf-status", nvcf_status))
        self._started(status, out)

    def _started(self, status: int, head: list[Header]) -> None:
        self.response_started = True
        if self.extra_headers:
            head.extend(self.extra_headers)
        if status in (204, 304):
            self.no_body = True
        self._head = head

    def send(self, data: bytes) -> None:
        if data and not self.no_body:
            self._out.append(data)

    def flush(self) -> None:
        self._write(False)

    def end(self) -> None:
        if not self.finished:
            self.finished = True
            self._write(True)

    def _write(self, end: bool) -> None:
        conn = self.conn
        sid = self.sid
        out = self._out
        head = self._head
        try:
            if head is not None:
                self._head = None
                conn.send_headers(sid, head, end and not out)
                if end and not out:  # END_STREAM went with the head
                    return
            if out or end:
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                if not conn.queue_data(sid, data, end):
                    raise ClientGone()
        except ClientGone:
            self.client_gone()  # the stream is gone: the call stops (once: it clears on_disconnect)

    def abort(self) -> None:
        self.finished = True
        self._out.clear()
        self.conn.reset(self.sid, ErrorCode.CANCEL if not self.response_started else ErrorCode.INTERNAL_ERROR)

    def backlogged(self) -> bool:
        conn = self.conn
        return conn.closed or conn.out.backlogged(self.sid)

    def when_writable(self, callback: Callable[[], None]) -> None:
        self.conn.when_writable(self.sid, callback)


class H2Downstream:
    """The client side of one gRPC stream, for the gRPC relay (see proxy/drivers/h2.py). Nothing
    here awaits: the relay queues DATA and, while the stream is `backlogged`, waits for
    `when_writable` before it acknowledges more of the instance's DATA."""

    __slots__ = ("conn", "sid")

    http2 = True  # its connection multiplexes calls (proxy.request_ids.slot_owner)

    def __init__(self, conn: StreamHost, sid: int) -> None:
        self.conn = conn
        self.sid = sid

    def send_headers(self, headers: Sequence[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        self.conn.send_headers(self.sid, headers, end_stream)

    def queue_data(self, data: bytes, end_stream: bool = False) -> bool:
        return self.conn.queue_data(self.sid, data, end_stream)

    def backlogged(self) -> bool:
        conn = self.conn
        return not conn.closed and conn.out.backlogged(self.sid)  # a closed connection takes nothing, and wakes every waiter

    def when_writable(self, callback: Callable[[], None]) -> None:
        self.conn.when_writable(self.sid, callback)

    def send_trailers(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.conn.send_trailers(self.sid, headers)

    def reset(self, error_code: int) -> None:
        self.conn.reset(self.sid, error_code)

    def stop_after_answer(self) -> None:
        """The call is answered but the client may still be sending: RST_STREAM NO_ERROR
        (RFC 9113 8.1) once the answer is framed. A reset submitted now would overtake it."""
        conn, sid = self.conn, self.sid
        conn.when_writable(sid, lambda: conn.reset(sid, ErrorCode.NO_ERROR))

    def ack(self, n: int) -> None:
        self.conn.ack(self.sid, n)


__all__ = ["STATUS_VALUES", "ClientGone", "H2Downstream", "H2Exchange"]
