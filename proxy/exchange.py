"""The protocol-neutral request/response exchange: the seam between the client-side
drivers (h1.py, h2.py) and the forwarder (forward.py).

A driver parses bytes and creates one Exchange per request; the forwarder then runs
`Forwarder.handle(exchange)` as one task and only uses what is defined here:

- request head: `method`, `target` (raw path + query), `headers` (lower-case names,
  bytes), `authority`, `client_addr`, `http2`, `scheme`;
- request body: `await read()` -> next chunk, b"" at the end. The driver buffers at
  most `max_body_buffer` bytes and applies backpressure (h1: pause reading, h2: send
  WINDOW_UPDATE only once a chunk was consumed). The buffer counts what arrived
  (`received`, `filled`), which the minimum body rate reads (proxy/body_rate.py);
- `conn`: the client connection the request came on (its identity only: requests of
  one multiplexed connection share a slot cap, proxy/limiter.py);
- response: `start_response(status, headers)`, `await write(chunk)` (returns once the
  client can take more: backpressure to the instance), `write_nowait(small)`, `end()`, or `abort()` to reset
  the stream / close the connection mid-response;
- `on_disconnect`: set by the forwarder; the driver calls it once if the client goes
  away before `end()`, so the upstream leg can be closed at once.

gRPC (HTTP/2, content-type application/grpc*) does not go through Exchange: the
h2 driver hands those streams to a `GrpcStreamHandler` (see proxy/h2.py).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client closed the connection or reset the stream."""


class BodyBuffer:
    """Request body chunks between a driver (producer) and the forwarder (consumer).

    `on_consumed(n)` tells the driver n bytes left the buffer, so it can resume reading
    or acknowledge flow-control credit."""

    __slots__ = ("_chunks", "_on_consumed", "_taken", "_waiter", "eof", "error", "filled", "limit", "received", "size")

    def __init__(self, limit: int, on_consumed: Callable[[int], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self.size = 0
        self.received = 0  # bytes fed so far
        self.filled = False  # the buffer reached `limit` (reading paused) since a reader last cleared this
        self.eof = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_consumed = on_consumed
        self.limit = limit
        self._taken = b""

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self.size += len(data)
        self.received += len(data)
        if self.size >= self.limit:
            self.filled = True
        self._wake()

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.eof:
            self.error = exc
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def take_whole(self) -> bytes:
        """The whole body of an ended request at once, marked consumed (so the driver
        returns its flow-control credit); a later call returns the same bytes again,
        for a retry on another instance."""
        chunks = self._chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            n, self.size = self.size, 0
            self._taken += data
            self._on_consumed(n)
        return self._taken

    async def read(self) -> bytes:
        while not self._chunks:
            if self.error is not None:
                # a fresh exception each time: the stored one never gets a traceback, whose
                # frames would refer back to this buffer (a cycle only the collector frees)
                raise type(self.error)(*self.error.args)
            if self.eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = self._chunks.popleft()
        self.size -= len(data)
        self._on_consumed(len(data))
        return data


class _EndedEmpty(BodyBuffer):
    """The body of every request that has none (HTTP/1.1 without Content-Length or
    Transfer-Encoding, RFC 9112 6.3; an HTTP/2 HEADERS frame with END_STREAM): ended
    and empty, so one shared buffer serves them all, and nothing may feed it."""

    __slots__ = ()

    def feed(self, data: bytes) -> None:
        raise RuntimeError("a request without a body received body bytes")


ENDED_EMPTY = _EndedEmpty(1 << 62, lambda n: None)
ENDED_EMPTY.eof = True


class Exchange(ABC):
    """Base for one request/response on a client connection (see the module docstring)."""

    conn: object  # set by each driver's exchange (its own slot)

    __slots__ = (
        "authority",
        "body",
        "client_addr",
        "finished",
        "headers",
        "http2",
        "method",
        "on_disconnect",
        "response_started",
        "scheme",
        "target",
    )

    def __init__(
        self, method: str, target: bytes, headers: Headers, authority: bytes, client_addr: str, http2: bool, body: BodyBuffer
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.authority = authority
        self.client_addr = client_addr
        self.http2 = http2
        self.body = body
        self.on_disconnect: Callable[[], None] | None = None
        self.response_started = False
        self.finished = False
        self.scheme = b"http"  # b"https" behind TLS

    async def read(self) -> bytes:
        return await self.body.read()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run the forwarder's task for this exchange (a driver may wrap it)."""
        asyncio.get_running_loop().create_task(coro)

    @abstractmethod
    def start_response(self, status: int, headers: Headers, flush: bool = True) -> None:
        """`flush=False`: the driver may hold the head back to send it with the first
        body bytes (the forwarder passes it when those are already at hand)."""
        ...

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abstractmethod
    def write_nowait(self, data: bytes) -> None:
        """Queue a small body part without waiting for the client (gateway-made answers)."""
        ...

    @abstractmethod
    def end(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    def client_gone(self) -> None:
        """Called by the driver when the client went away before the exchange ended."""
        self.body.fail(ClientGone())
        cb = self.on_disconnect
        if cb is not None and not self.finished:
            self.on_disconnect = None
            cb()
