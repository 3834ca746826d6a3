"""The other workers of a `--workers N` gateway, for the one answer a worker cannot
give alone: a pexec status poll for a request another worker ran (its result lives
in that worker's memory).

The worker that takes a pexec request writes its index into the request id (the
first byte of the UUID, as two hex digits), so any worker knows the owner of an id
without asking anyone. A poll for an id owned by a sibling is sent on, unchanged,
to that sibling's private loopback listener (ports handed out by the parent); the
owner answers it from its own memory. The owner never sends its own ids on, so a
poll is forwarded at most once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fngate.proxy.config import LOOPBACK
from fngate.proxy.errors import NotFound, UpstreamTimeout, UpstreamUnavailable
from fngate.proxy.exchange import Exchange
from fngate.proxy.forward import Call, Forwarder
from fngate.proxy.headers import HOP_BY_HOP
from fngate.proxy.metrics import Metrics
from fngate.proxy.request_ids import new_request_id
from fngate.proxy.upstream.h1_client import UpstreamLost
from fngate.proxy.upstream.pool import ConnectFailed

STATUS_PREFIX = b"/v2/nvcf/pexec/status/"
_NOT_SENT_ON = HOP_BY_HOP | {b"host", b"content-length"}


class Siblings:
    __slots__ = ("_owners", "_tag", "index", "ports")

    def __init__(self, index: int, ports: Sequence[int]) -> None:
        if not 0 <= index < len(ports) <= 256:
            raise ValueError("worker index out of range (at most 256 workers)")
        self.index = index
        self.ports = tuple(ports)
        self._tag = b"%02x" % index
        self._owners = {b"%02x" % i: port for i, port in enumerate(self.ports) if i != index}

    @property
    def port(self) -> int:
        """This worker's private loopback port."""
        return self.ports[self.index]

    def tag(self, request_id: bytes) -> bytes:
        """The request id with this worker as its owner."""
        return self._tag + request_id[2:]

    def owner_port(self, request_id: bytes) -> int | None:
        """The private port of the sibling that owns `request_id`; None when it is ours
        or no worker's."""
        return self._owners.get(request_id[:2])

    async def relay(self, fw: Forwarder, ex: Exchange, call: Call, port: int, wait: float) -> int:
        """Send the poll to the owner and relay its answer (202, the result, or an error)."""
        head = [b"GET %s HTTP/1.1\r\nhost: %s:%d\r\n" % (ex.target, LOOPBACK.encode(), port)]
        head += [b"%s: %s\r\n" % (n, v) for n, v in ex.headers if n not in _NOT_SENT_ON]
        head.append(b"\r\n")
        head_bytes = b"".join(head)
        for attempt in (0, 1):
            try:
                conn, reused = await fw.pool.acquire(LOOPBACK, port)
            except ConnectFailed:  # the owner is gone, and its results with it
                raise NotFound("Request not found: the gateway worker that ran it is gone") from None
            call.conn = conn
            conn.start(head_bytes, False)
            try:
                status, headers = await asyncio.wait_for(conn.response(), wait + fw.config.header_grace)
                break
            except TimeoutError:
                raise UpstreamTimeout("the gateway worker holding the request did not answer") from None
            except UpstreamLost as exc:
                call.conn = None
                conn.abort()
                if attempt or not reused or not exc.before_response:  # a stale pooled connection: once more
                    raise UpstreamUnavailable(f"the gateway worker holding the request failed: {exc}") from None
        body = conn.body
        assert body is not None  # a response head came: its body buffer exists
        ex.start_response(status, [(n, v) for n, v in headers if n not in HOP_BY_HOP], flush=not (body.size or body.eof))
        await fw.relay_body(ex, conn)
        ex.end()
        return status


class PeerForwarder(Forwarder):
    """Serves the private listener: pexec status polls from siblings only, and not
    counted in this worker's metrics (the worker the client reached counts them)."""

    __slots__ = ()

    def __init__(self, main: Forwarder) -> None:
        super().__init__(main.config, main.holder, main.limiter, main.pool, Metrics())
        self.pexec = main.pexec
        self.connections = main.connections  # a graceful stop closes these too

    def start(self, ex: Exchange) -> None:
        asyncio.get_running_loop().create_task(self.handle(ex))

    async def handle(self, ex: Exchange, *args: object, **kwargs: object) -> None:
        if ex.method == "GET" and ex.target.startswith(STATUS_PREFIX):
            await super().handle(ex)
            return
        self._send_error(ex, NotFound("the private listener serves pexec status polls only"), new_request_id())
