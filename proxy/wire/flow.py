"""Write-side flow control of one transport, for every protocol class that writes:
the client drivers (h1.py, h2.py) and the instance connections (proxy/instances/), and per stream proxy/wire/stream_flow.py.

asyncio tells a protocol when its transport's buffer crossed the high-water mark
(`pause_writing`) and when it drained (`resume_writing`). Whoever wants to write more
asks `paused` and, while it is, registers a callback with `when_writable`; callbacks
run once each, at the resume or when the connection is lost (then the writer finds
the connection closed). No future, no task: a waiting writer is a callback.
"""

from __future__ import annotations

from collections.abc import Callable


class WriteFlow:
    __slots__ = ("_waiting", "paused")

    def __init__(self) -> None:
        self.paused = False
        self._waiting: list[Callable[[], None]] = []

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._run()

    def when_writable(self, callback: Callable[[], None]) -> None:
        """`callback()` once the transport drained (at once if it is not paused)."""
        if self.paused:
            self._waiting.append(callback)
        else:
            callback()

    def take_waiting(self) -> list[Callable[[], None]]:
        """The callbacks waiting now, for an owner that runs them its own way (soon)."""
        waiting, self._waiting = self._waiting, []
        return waiting

    def connection_lost(self) -> None:
        self.paused = False
        self._run()

    def _run(self) -> None:
        waiting = self._waiting
        if waiting:
            self._waiting = []
            for cb in waiting:
                cb()
