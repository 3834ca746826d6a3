"""SSE policy: `: keep-alive` comments to a streaming request while it waits.

With `sse_queue_keepalive > 0`, a request that accepts `text/event-stream` and has had
no response headers for that long (queued, cold start, or a slow first token) gets a
200 `text/event-stream` head from the gateway, then a comment every interval, so
clients with inactivity watchdogs keep the stream. When the instance answers, its
events follow on the same stream; a non-SSE answer or a gateway error then arrives as
one `event: error` with the status, since the 200 has already been sent.
"""

from __future__ import annotations

import asyncio

import orjson

from fngate.proxy.exchange import ClientGone, Exchange

COMMENT = b": keep-alive\n\n"


def wants_sse(ex: Exchange) -> bool:
    return any(n == b"accept" and b"text/event-stream" in v for n, v in ex.headers)


def error_event(status: int, detail: str) -> bytes:
    return b"event: error\ndata: " + orjson.dumps({"status": status, "detail": detail}) + b"\n\n"


class QueueKeepAlive:
    __slots__ = ("_loop", "_timer", "ex", "interval", "request_id", "started")

    def __init__(self, ex: Exchange, interval: float, request_id: bytes) -> None:
        self.ex = ex
        self.interval = interval
        self.request_id = request_id
        self.started = False  # the gateway's own 200 head went out
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        ex = self.ex
        if ex.finished:
            return
        if not self.started:
            self.started = True
            ex.start_response(
                200,
                [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"nvcf-reqid", self.request_id),
                    (b"nvcf-status", b"fulfilled"),
                ],
            )
        self._loop.create_task(self._send())
        self._timer = self._loop.call_later(self.interval, self._tick)

    async def _send(self) -> None:
        try:
            await self.ex.write(COMMENT)
        except ClientGone:
            pass

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
