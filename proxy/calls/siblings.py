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

import time
from collections.abc import Sequence
from typing import Protocol

from fngate.proxy.calls.call import Call, Engine, answer_error
from fngate.proxy.calls.exchange import Exchange
from fngate.proxy.calls.metrics import Metrics
from fngate.proxy.calls.nvcf_metrics import PEXEC_STATUS
from fngate.proxy.calls.request_ids import new_request_id
from fngate.proxy.config import LOOPBACK
from fngate.proxy.errors import NotFound, ProxyError, UpstreamTimeout
from fngate.proxy.wire.headers import HOP_BY_HOP


class PollHandler(Protocol):
    """What the private listener hands a poll to (proxy/calls/pexec.py's Pexec)."""

    def start(self, ex: Exchange, request_id: bytes, started: float, metrics: Metrics | None = None) -> None: ...


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

    def relay(self, engine: Engine, ex: Exchange, request_id: bytes, started: float, port: int, wait: float) -> None:
        """Send the poll to the owner and relay its answer (202, the result, or an error)."""
        RelayCall(engine, ex, request_id, started, port, wait).run()


class RelayCall(Call):
    """A Call whose instance is the sibling worker on `port` (no slot, no route): the
    poll goes on unchanged, the owner's answer comes back as it is."""

    __slots__ = ("port",)

    def __init__(self, engine: Engine, ex: Exchange, request_id: bytes, started: float, port: int, wait: float) -> None:
        super().__init__(engine, ex, None, None, request_id, started, started + wait + engine.config.header_grace, endpoint=PEXEC_STATUS)
        self.port = port

    def _take_slot(self) -> None:
        conn = self.engine.pool.take_idle(LOOPBACK, self.port)
        if conn is None:
            self.task = self.loop.create_task(self._obtain(False))
        else:
            self._send(conn)

    def _address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def _retry(self) -> None:
        self.engine.metrics.retries += 1
        self.retried = True
        self._take_slot()

    def _request_head(self, body_line: bytes | None) -> bytes:
        ex = self.ex
        head = [b"GET %s HTTP/1.1\r\nhost: %s:%d\r\n" % (ex.target, LOOPBACK.encode(), self.port)]
        head += [b"%s: %s\r\n" % (n, v) for n, v in ex.headers if n not in _NOT_SENT_ON]
        head.append(b"\r\n")
        return b"".join(head)

    def _connect_error(self, detail: str) -> ProxyError:
        return NotFound("Request not found: the gateway worker that ran it is gone")

    def _timeout_error(self) -> ProxyError:
        return UpstreamTimeout("the gateway worker holding the request did not answer")


class PeerHandler:
    """Serves the private listener: pexec status polls from siblings only, and not
    counted in this worker's metrics (the worker the client reached counts them)."""

    __slots__ = ("metrics", "pexec")

    def __init__(self, pexec: PollHandler) -> None:
        self.pexec = pexec
        self.metrics = Metrics()

    def start(self, ex: Exchange) -> None:
        if ex.method == "GET" and ex.target.startswith(STATUS_PREFIX):
            self.pexec.start(ex, new_request_id(), time.monotonic(), self.metrics)
            return
        answer_error(ex, NotFound("the private listener serves pexec status polls only"), new_request_id())
