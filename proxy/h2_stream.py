"""One client HTTP/2 stream as the forwarder sees it (H2Exchange) and as the gRPC relay
sees it (H2Downstream). Both only call back into their H2Server (proxy/h2.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ngh2 import ErrorCode, NeverIndexedHeader

from fngate.proxy.exchange import ENDED_EMPTY, BodyBuffer, ClientGone, Exchange, Headers
from fngate.proxy.headers import HOP_BY_HOP

if TYPE_CHECKING:
    from fngate.proxy.h2 import H2Server

STATUS_VALUES = {s: b"%d" % s for s in range(100, 600)}
_UNIQUE = frozenset({b"nvcf-reqid", b"date"})  # a new value per response: kept out of the HPACK table


class H2Exchange(Exchange):
    __slots__ = ("__weakref__", "_pending", "conn", "no_body", "sid")

    conn: H2Server

    def __init__(
        self, conn: H2Server, sid: int, method: str, target: bytes, headers: Headers, authority: bytes, ended: bool = False
    ) -> None:
        super().__init__(
            method,
            target,
            headers,
            authority,
            conn.client_addr,
            True,
            ENDED_EMPTY if ended else BodyBuffer(conn.config.max_body_buffer, lambda n: conn.ack(sid, n)),
        )
        self.conn = conn
        self.sid = sid
        self._pending: list[bytes] = []
        self.no_body = method == "HEAD"
        self.scheme = conn.scheme

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.get_running_loop().create_task(coro)

    def start_response(self, status: int, headers: Headers, flush: bool = True) -> None:
        self.response_started = True
        out: list[tuple[bytes, bytes]] = [(b":status", STATUS_VALUES.get(status) or b"%d" % status)]
        for n, v in headers:
            if n in _UNIQUE:
                out.append(NeverIndexedHeader(n, v))
            elif n not in HOP_BY_HOP:
                out.append((n, v))
        if status in (204, 304):
            self.no_body = True
        self.conn.send_headers(self.sid, out, False)

    async def write(self, data: bytes) -> None:
        if data and not self.no_body:
            await self.conn.send_data(self.sid, data, False)

    def write_nowait(self, data: bytes) -> None:
        if data and not self.no_body:
            self._pending.append(data)

    def end(self) -> None:
        if self.finished:
            return
        self.finished = True
        data = b"".join(self._pending)
        self._pending = []
        self.conn.queue_data(self.sid, data, True)

    def abort(self) -> None:
        self.finished = True
        self.conn.reset(self.sid, ErrorCode.CANCEL if not self.response_started else ErrorCode.INTERNAL_ERROR)


class H2Downstream:
    """The client side of one gRPC stream, for the gRPC relay (see proxy/h2.py). Nothing
    here awaits: the relay queues DATA and, while the stream is `backlogged`, waits for
    `when_writable` before it acknowledges more of the instance's DATA."""

    __slots__ = ("conn", "sid")

    http2 = True  # its connection multiplexes calls (proxy.request_ids.slot_owner)

    def __init__(self, conn: H2Server, sid: int) -> None:
        self.conn = conn
        self.sid = sid

    def send_headers(self, headers: Sequence[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        self.conn.send_headers(self.sid, headers, end_stream)

    def queue_data(self, data: bytes, end_stream: bool = False) -> bool:
        return self.conn.queue_data(self.sid, data, end_stream)

    def backlogged(self) -> bool:
        conn = self.conn
        return not conn.closed and conn.backlogged(self.sid)  # a closed connection takes nothing, and wakes every waiter

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
