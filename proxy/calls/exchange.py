"""The client side of one request, as the call (proxy/calls/call.py) and the handlers see it:
the one seam between the client-side drivers (h1.py, h2.py + h2_stream.py) and
everything that answers requests. Drivers implement it; the call never imports a driver.

A driver parses bytes, makes one Exchange per request and hands it to the
RequestHandler it was constructed with (`handler.start(exchange)`):

- request head: `method`, `target` (raw path + query), `headers` (lower-case names,
  bytes), `authority`, `client_addr`, `http2`, `scheme`, `expect_continue`;
- request body, pushed: `body` is a RequestBody the driver feeds. A consumer
  `attach`es a BodyListener and gets `on_request_data(data)` and `on_request_end()`;
  it acknowledges what it passed on with `body.consumed(n)`, and only then does the
  driver read more (HTTP/1.1: resume reading; HTTP/2: WINDOW_UPDATE). A complete
  body can be taken at once with `take_whole()` (kept for a retry);
- response: `start_response(status, headers)` (a header list, for the gateway's own
  answers) or `start_response_block(status, lines, framed, request_id, nvcf_status)`
  (an instance's header lines, already rewritten, passed on without a per-field step);
  `send(data)` queues body bytes and never blocks, `flush()` writes what was queued
  (one socket write for a batch), `end()` ends the response (and flushes), `abort()`
  resets the stream / drops the connection mid-response;
- backpressure: `backlogged()` says the client is not taking bytes for now, and
  `when_writable(cb)` calls `cb` once it takes more (or went away);
- `extra_headers`: fields a handler adds to whatever response head the exchange sends
  (CORS on the path routes, proxy/calls/cors.py); None for most requests;
- `on_disconnect`: set by the consumer; the driver calls it once when the client goes
  away before `end()`, so the instance's side can be closed at once. A body still on
  its way then fails (`on_request_gone`), also after `end()` (a pexec job that runs on
  after its 202 needs the rest of its body).

gRPC (HTTP/2, content-type application/grpc*) does not use Exchange: the HTTP/2
driver hands those streams to the gRPC handler (see proxy/drivers/h2.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

from fngate.proxy.wire.headers import Headers as Headers  # re-exported for the seam


class ClientGone(Exception):
    """The client closed the connection or reset the stream."""


class RequestHandler(Protocol):
    """What a client driver hands each request to (given to it at construction)."""

    def start(self, ex: Exchange) -> None: ...


class Closable(Protocol):
    def shutdown(self) -> None: ...
    def close(self) -> None: ...


class OpenConnections:
    """The open client connections of a listener (drivers add and discard themselves),
    for a graceful stop: `shutdown` each, then `close` what is left."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: set[Closable] = set()

    def add(self, conn: Closable) -> None:
        self._open.add(conn)

    def discard(self, conn: Closable) -> None:
        self._open.discard(conn)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Closable]:
        return iter(list(self._open))


class BodyListener(Protocol):
    def on_request_data(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...
    def on_request_gone(self) -> None:
        """The client went away before the body was complete: it never will be."""


class RequestBody:
    """Request body bytes from a driver (producer) to one listener (consumer).

    Bytes count in `size` from `feed` until the consumer acknowledges them with
    `consumed` (then `on_consumed(n)` lets the driver read on); `full` tells the driver
    to stop reading. Until a listener is attached the bytes wait here. `received` and
    `filled` are read by the minimum body rate (proxy/calls/body_rate.py)."""

    __slots__ = ("_chunks", "_kept", "_listener", "_on_consumed", "eof", "error", "filled", "limit", "received", "size")

    def __init__(self, limit: int, on_consumed: Callable[[int], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self._listener: BodyListener | None = None
        self._on_consumed = on_consumed
        self._kept = b""
        self.size = 0
        self.received = 0  # bytes fed so far
        self.filled = False  # the buffer reached `limit` since a reader last cleared this
        self.eof = False
        self.error: BaseException | None = None
        self.limit = limit

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self.received += len(data)
        if self.size >= self.limit:
            self.filled = True
        listener = self._listener
        if listener is None:
            self._chunks.append(data)
        else:
            listener.on_request_data(data)

    def feed_eof(self) -> None:
        if self.eof:
            return
        self.eof = True
        listener = self._listener
        if listener is not None:
            listener.on_request_end()

    def fail(self, exc: BaseException) -> None:
        """The client went away mid-body: the listener hears it (once)."""
        if self.eof:
            return
        self.error = exc
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.on_request_gone()

    def consumed(self, n: int) -> None:
        if n > 0:
            self.size -= n
            self._on_consumed(n)

    def take_whole(self) -> bytes:
        """The whole body of an ended request at once, acknowledged; a later call returns
        the same bytes again (a retry on another instance)."""
        chunks = self._chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._kept += data
            self.consumed(self.size)
        return self._kept

    def attach(self, listener: BodyListener) -> None:
        """Deliver the body to `listener`: what waits here now, the rest as it comes."""
        self._listener = listener
        chunks = self._chunks
        while chunks and self._listener is listener:
            listener.on_request_data(chunks.popleft())
        if self.eof and self._listener is listener:
            listener.on_request_end()

    def detach(self) -> None:
        self._listener = None


class _EndedEmpty(RequestBody):
    """The body of every request that has none (HTTP/1.1 without Content-Length or
    Transfer-Encoding, RFC 9112 6.3; an HTTP/2 HEADERS frame with END_STREAM): ended
    and empty, so one shared object serves them all, and nothing may feed it."""

    __slots__ = ()

    def feed(self, data: bytes) -> None:
        raise RuntimeError("a request without a body received body bytes")

    def fail(self, exc: BaseException) -> None:
        pass

    def attach(self, listener: BodyListener) -> None:
        listener.on_request_end()


ENDED_EMPTY = _EndedEmpty(1 << 62, lambda n: None)
ENDED_EMPTY.eof = True


class Exchange(ABC):
    """One request/response on a client connection (see the module docstring)."""

    conn: object  # the client connection it came on (each driver's exchange has its own slot)

    __slots__ = (
        "authority",
        "body",
        "client_addr",
        "expect_continue",
        "extra_headers",
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
        self, method: str, target: bytes, headers: Headers, authority: bytes, client_addr: str, http2: bool, body: RequestBody
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
        self.extra_headers: Headers | None = None
        self.expect_continue = False  # HTTP/1.1 `Expect: 100-continue`: read_body sends the 100
        self.scheme = b"http"  # b"https" behind TLS

    def read_body(self, listener: BodyListener) -> None:
        """Start delivering the request body to `listener` (see RequestBody.attach)."""
        self.body.attach(listener)

    @abstractmethod
    def start_response(self, status: int, headers: Headers) -> None: ...

    @abstractmethod
    def start_response_block(self, status: int, lines: bytes, framed: bool, request_id: bytes, nvcf_status: bytes) -> None:
        """`lines`: header lines (each ending CRLF) without nvcf-reqid/nvcf-status, which
        the driver adds from `request_id` and `nvcf_status`; `framed`: they hold a
        content-length."""

    @abstractmethod
    def send(self, data: bytes) -> None: ...

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def end(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    @abstractmethod
    def backlogged(self) -> bool: ...

    @abstractmethod
    def when_writable(self, callback: Callable[[], None]) -> None: ...

    def client_gone(self) -> None:
        """Called by the driver when the client went away (or its stream was reset): a
        body still on its way fails, and a consumer of an exchange not yet ended hears it."""
        self.body.fail(ClientGone())
        cb = self.on_disconnect
        if cb is not None and not self.finished:
            self.on_disconnect = None
            cb()
