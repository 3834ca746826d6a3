"""The minimum request-body rate: a request that holds an instance slot while its
client sends the body slower than `rate` bytes/s is cut, so the slot is freed.

A slow POST (one byte every two seconds) never trips the body idle timeout, and holds
its instance slot for as long as it trickles; a few such clients hold every slot of
a function. The guard lets the body start in a grace period (connect, slow start),
then measures what arrived in each window. A window in which the gateway's body buffer
filled up does not count: then the instance, not the client, set the pace.

Shared by both drivers and the gRPC relay: it reads only a body's progress (the
RequestBody the drivers feed, proxy/calls/exchange.py; a counter of the relay's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class BodyProgress(Protocol):
    """What the guard reads of a request body (proxy.exchange.RequestBody has it all)."""

    received: int  # bytes the client sent so far
    eof: bool  # the body is complete
    error: BaseException | None  # the body failed (the request is over)
    filled: bool  # set when the gateway held back the client since the guard last cleared it

    @property
    def full(self) -> bool: ...  # the gateway holds the client back now (the instance sets the pace)


class BodyRateGuard:
    __slots__ = ("_body", "_loop", "_mark", "_min_bytes", "_on_slow", "_timer", "_window")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, body: BodyProgress, rate: float, window: float, grace: float, on_slow: Callable[[], None]
    ) -> None:
        self._body = body
        self._loop = loop
        self._min_bytes = rate * window
        self._window = window
        self._on_slow = on_slow  # called once, from the loop, when a window fell short
        self._mark = 0
        self._timer: asyncio.TimerHandle | None = loop.call_later(grace, self._open_window)

    def _open_window(self) -> None:
        body = self._body
        if body.eof or body.error is not None:  # the body is complete (or gone): nothing to guard
            self._timer = None
            return
        self._mark = body.received
        body.filled = body.full  # full now: the client waits for the instance, not the other way
        self._timer = self._loop.call_later(self._window, self._check)

    def _check(self) -> None:
        body = self._body
        if not body.eof and body.error is None and body.received - self._mark < self._min_bytes and not body.filled:
            self._timer = None
            self._on_slow()
            return
        self._open_window()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
