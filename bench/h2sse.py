"""Many SSE streams multiplexed over a few HTTP/2 (h2c, prior knowledge) client connections.

The holding benchmark's second transport: an HTTP/1.1 stream costs the gateway two
descriptors (client and instance), an HTTP/2 stream one (the instance), so this is how
one gateway process holds 10,000 streams under a 20,000 descriptor limit. A stream
counts as held once its first complete event (`data: ...` up to a blank line) arrived.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import ngh2
from ngh2 import Configuration, Connection, Role
from ngh2 import events as ev

from fngate.proxy.config import LOOPBACK

# Streams per connection that may be waiting for their first event at once: each of them
# makes the gateway connect to the instance, and a burst of thousands would overflow the
# instance's accept queue.
OPENING_PER_CONNECTION = 32
_BIG_WINDOW = 2**31 - 1  # the connection window we open: it never holds the gateway back


class SseHolder(asyncio.Protocol):
    """One client connection that opens `streams` SSE requests and keeps them open."""

    def __init__(self, headers: list[tuple[bytes, bytes]], streams: int, on_held: Callable[[], None]) -> None:
        self.conn = Connection(Role.CLIENT, Configuration(auto_window_update=False))
        self.headers = headers
        self.to_open = streams
        self.on_held = on_held
        self.waiting: dict[int, bytes] = {}  # stream id -> bytes before its first full event
        self.held: set[int] = set()  # streams whose first event arrived and that are still open
        self.ever_held = 0
        self.failures: Counter[str] = Counter()
        self.settled = asyncio.get_running_loop().create_future()  # every stream held or failed
        self.transport: asyncio.Transport | None = None
        self._ready = False

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's transport is a Transport
        self.conn.initiate_connection()
        self.conn.set_local_window_size(_BIG_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
        except ngh2.NGH2Error as exc:
            self._fail_all(f"protocol error: {exc}")
            assert self.transport is not None  # data comes only after connection_made
            self.transport.close()
            return
        for e in self.conn.events():
            if isinstance(e, ev.SettingsReceived) and not self._ready:
                self._ready = True  # the gateway's stream limit is known: start opening
                self._open_more()
            elif isinstance(e, ev.ResponseReceived):
                status = dict(e.headers).get(b":status", b"?")
                if status != b"200":
                    self._fail(e.stream_id, f"status {status.decode()}")
                    try:
                        self.conn.reset_stream(e.stream_id)
                    except ngh2.NGH2Error:  # its answer may have ended it
                        pass
            elif isinstance(e, ev.DataReceived):
                if e.data:
                    self.conn.acknowledge_received_data(len(e.data), e.stream_id)
                self._on_data(e.stream_id, e.data)
                if e.end_stream:
                    self._gone(e.stream_id, "ended before its first event")
            elif isinstance(e, ev.StreamReset):
                self._gone(e.stream_id, f"reset by the gateway ({e.error_code!r})")
            elif isinstance(e, ev.GoAwayReceived):
                self._fail_all(f"GOAWAY ({e.error_code!r})")
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(f"connection lost ({exc!r})" if exc else "connection closed")

    # -- streams ---------------------------------------------------------------------------
    def _open_more(self) -> None:
        while self.to_open and len(self.waiting) < OPENING_PER_CONNECTION:
            sid = self.conn.send_request(self.headers, end_stream=True)
            self.waiting[sid] = b""
            self.to_open -= 1
        self._check_settled()

    def _on_data(self, sid: int, data: bytes) -> None:
        if sid not in self.waiting:
            return
        buf = self.waiting[sid] + data
        if b"\n\n" not in buf:
            self.waiting[sid] = buf
            return
        del self.waiting[sid]
        if not buf.startswith(b"data:"):
            self.failures["not an event stream"] += 1
        else:
            self.held.add(sid)
            self.ever_held += 1
            self.on_held()
        self._open_more()

    def _fail(self, sid: int, why: str) -> None:
        if self.waiting.pop(sid, None) is not None:
            self.failures[why] += 1
            self._open_more()

    def _gone(self, sid: int, why: str) -> None:
        self.held.discard(sid)
        self._fail(sid, why)

    def _fail_all(self, why: str) -> None:
        lost = len(self.waiting) + self.to_open
        if lost:
            self.failures[why] += lost
        self.waiting.clear()
        self.held.clear()
        self.to_open = 0
        self._check_settled()

    def _check_settled(self) -> None:
        if not self.to_open and not self.waiting and not self.settled.done():
            self.settled.set_result(None)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def request_headers(port: int, path: str, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    pseudo = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", f"{LOOPBACK}:{port}".encode()), (b":path", path.encode())]
    return pseudo + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
