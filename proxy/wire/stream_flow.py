"""Write-side flow control per HTTP/2 stream, for both ends that queue body bytes in an
ngh2 engine: the client driver (proxy/drivers/h2.py) and the instance connections
(proxy/instances/h2.py).

A sender queues DATA in the engine (`queue`), which frames it as the peer's windows
allow. While more than QUEUE_HIGH bytes of its stream wait there, or the socket's
buffer is over its high-water mark (`flow`), the stream is `backlogged` and the sender
registers a callback with `when_writable` instead of producing more. The owner wakes
the callbacks: `wake(sid)` when a stream ends, `wake_ready()` after each flush (the
streams whose queue drained), `wake_all()` when the connection is gone.

`soon`: run the callbacks from the loop (call_soon), never from inside the call that
wakes them (the instance side, whose wakes happen inside a sink's callback); else at
once (the client side, which wakes from its own flush).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import ngh2

from fngate.proxy.wire.flow import WriteFlow

QUEUE_HIGH = 1 << 16  # body bytes of one stream the engine may hold before its sender waits
GONE = (ngh2.NGH2Error, ValueError)  # the stream (or the connection) can no longer take this


class StreamFlow:
    __slots__ = ("_waiting", "flow", "h2", "loop", "soon")

    def __init__(self, h2: ngh2.Connection, loop: asyncio.AbstractEventLoop | None, *, soon: bool) -> None:
        self.h2 = h2
        self.loop = loop  # None until the connection is made (the client driver)
        self.soon = soon
        self.flow = WriteFlow()  # paused: the transport's buffer is over its high-water mark
        self._waiting: dict[int, list[Callable[[], None]]] = {}  # stream id -> senders waiting for its queue

    def queue(self, sid: int, data: bytes, end_stream: bool) -> bool:
        """Queue body bytes of `sid` in the engine; False when the stream is gone."""
        try:
            self.h2.send_data(sid, data, end_stream=end_stream)
        except GONE:
            return False
        return True

    def backlogged(self, sid: int) -> bool:
        """The peer is not taking this stream's bytes (windows closed or socket full)."""
        return self.flow.paused or self.h2.queued_body_size(sid) > QUEUE_HIGH

    def when_writable(self, sid: int, callback: Callable[[], None]) -> None:
        """`callback()` once the stream may take more (or is gone); soon, from the loop,
        when it may already."""
        if self.h2.queued_body_size(sid) > QUEUE_HIGH:
            self._waiting.setdefault(sid, []).append(callback)
        elif self.flow.paused:
            self.flow.when_writable(callback)
        else:
            self.loop.call_soon(callback)  # type: ignore[union-attr]  # set once connected

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def wake(self, sid: int) -> None:
        """The stream ended or was reset: its senders go on (and find it gone)."""
        cbs = self._waiting.pop(sid, None)
        if cbs is not None:
            self._run(cbs)

    def wake_ready(self) -> None:
        """After the engine framed more: wake the senders whose stream queue drained."""
        h2 = self.h2
        for sid in [sid for sid in self._waiting if h2.queued_body_size(sid) <= QUEUE_HIGH]:
            self.wake(sid)

    def wake_all(self) -> None:
        """The connection is gone: every sender goes on (and finds it closed)."""
        waiting, self._waiting = self._waiting, {}
        for cbs in waiting.values():
            self._run(cbs)
        if self.soon:
            self._run(self.flow.take_waiting())
        self.flow.connection_lost()

    def _run(self, cbs: list[Callable[[], None]]) -> None:
        if self.soon:
            call_soon = self.loop.call_soon  # type: ignore[union-attr]  # a stream was opened: connected
            for cb in cbs:
                call_soon(cb)
        else:
            for cb in cbs:
                cb()
