"""A compat-mode (pexec/exec) request while it runs on an instance, and the client side
of its call that collects the answer (spec part 2, 1.3-1.8).

The collector keeps a body of at most 5 MiB in memory; a larger one is spooled to a
file and, with the artifacts the instance left in its output directory, zipped into a
large result answered as 302 + Location. The instance's 4xx/5xx become problem+json
first (spec 3.3), so they never go large.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Protocol

import orjson

from fngate.proxy.calls.exchange import BodyListener, Exchange, Headers, RequestBody
from fngate.proxy.calls.pexec_files import MAX_DIRECT_BYTES, RESULTS_PATH, LargeResults, OutputDir, spool_path
from fngate.proxy.errors import UpstreamUnavailable
from fngate.proxy.wire.headers import parse_header_block

if TYPE_CHECKING:
    from fngate.proxy.calls.call import Call
    from fngate.proxy.calls.pexec_assets import StagedAssets
    from fngate.proxy.calls.pexec_files import Progress
    from fngate.proxy.errors import ProxyError


def inference_problem(status: int, body: bytes) -> tuple[Headers, bytes]:
    """Compat mode rewrites an instance's 4xx/5xx into problem+json (spec 3.3), with the
    instance's JSON `error` field as detail when it has one."""
    detail = "Inference error"
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            detail = doc["error"]
    except orjson.JSONDecodeError:
        pass
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    problem = {
        "type": "urn:inference-service:problem-details:" + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
    }
    return [(b"content-type", b"application/problem+json")], orjson.dumps(problem)


def _spool(path: str, parts: list[bytes]) -> IO[bytes]:
    """A file for a body that goes large, holding what arrived so far (closed by the collector)."""
    f = open(path, "wb")  # noqa: SIM115
    f.write(b"".join(parts))
    return f


class Answers(Protocol):
    """How a route answers a job: pexec passes the result through, exec wraps it."""

    def result(self, ex: Exchange, job: Job) -> int: ...
    def in_progress(self, ex: Exchange, request_id: bytes, progress: Progress | None) -> int: ...
    def timed_out(self, ex: Exchange, request_id: bytes, err: ProxyError) -> int: ...


class Job:
    """One request from its POST until its result is delivered or given up.

    After a 202 the result waits for the next poll at most `max(2 x poll, 10 s)` (NVCF's
    worker); then the job is `abandoned` (its call cancelled, its result dropped) and a
    poll gets 504 until the tracking record ages out, 1 h after the last 202."""

    __slots__ = (
        "abandoned",
        "body",
        "call",
        "done",
        "function_id",
        "headers",
        "nca_id",
        "outputs",
        "poll_timer",
        "poll_within",
        "polled",
        "request_id",
        "staged",
        "status",
        "tracked_until",
        "version_id",
    )

    def __init__(
        self,
        request_id: bytes,
        function_id: str,
        version_id: str,
        nca_id: str,
        outputs: OutputDir | None,
        staged: StagedAssets | None = None,
    ) -> None:
        self.request_id = request_id
        self.function_id = function_id
        self.version_id = version_id  # the version that runs it: a poll is authorized for it
        self.nca_id = nca_id
        self.outputs = outputs
        self.staged = staged  # the input assets laid out for it, removed with its end
        self.done = asyncio.Event()
        self.status = 0
        self.headers: Headers = []
        self.body = b""
        self.call: Call | None = None  # while it runs
        self.abandoned = False
        self.polled = False  # a poll is waiting on it now
        self.poll_timer: asyncio.TimerHandle | None = None
        self.poll_within = 0.0  # the wait for the next poll now armed
        self.tracked_until = 0.0  # monotonic: 1 h after the last 202

    def expect_poll(self, within: float, on_miss: Callable[[Job], None]) -> None:
        self.stop_waiting()
        self.poll_within = within
        self.poll_timer = asyncio.get_running_loop().call_later(within, on_miss, self)

    def stop_waiting(self) -> None:
        if self.poll_timer is not None:
            self.poll_timer.cancel()
            self.poll_timer = None

    def abandon(self) -> None:
        """NVCF's worker gave up waiting for a poll: cancel the call, forget the result."""
        self.stop_waiting()
        self.abandoned = True
        call, self.call = self.call, None
        if call is not None:
            call.cancel()
        self.body = b""
        self.headers = []
        self.clean_up()

    def clean_up(self) -> None:
        """The request's directories go once it ended (NVCF's worker)."""
        if self.outputs is not None:
            self.outputs.remove()
        if self.staged is not None:
            self.staged.remove()


class ResultCollector(Exchange):
    """The client side of a job's call: the seam a client driver implements, collecting
    the answer for the poll that fetches it. The request is the client's (or exec's
    rewrapped one); the call's answer goes into the job."""

    __slots__ = (
        "base_url",
        "client",
        "compat",
        "conn",
        "from_instance",
        "job",
        "limit",
        "parts",
        "results",
        "size",
        "spool",
        "spool_file",
        "spool_name",
    )

    def __init__(
        self,
        client: Exchange,
        job: Job,
        results: LargeResults | None,
        compat: bool = True,
        headers: Headers | None = None,
        body: RequestBody | None = None,
        limit: int = MAX_DIRECT_BYTES,
    ) -> None:
        """`headers`, `body`: the request the instance gets instead of the client's (exec);
        `limit`: the largest body answered directly (NVCF: 5 MiB)."""
        super().__init__(
            client.method,
            client.target,
            client.headers if headers is None else headers,
            client.authority,
            client.client_addr,
            client.http2,
            client.body if body is None else body,
        )
        self.scheme = client.scheme
        self.expect_continue = client.expect_continue
        self.conn = client.conn  # the slot owner of the request (proxy/calls/request_ids.py)
        self.client: Exchange | None = client
        self.job = job
        self.results = results  # None: compat off, no large results
        self.base_url = b"%s://%s" % (client.scheme, client.authority)  # where the Location points
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.spool_file: IO[bytes] | None = None
        self.spool_name = ""
        self.from_instance = False
        self.compat = compat  # worker compatibility mode: the instance's errors become problem+json

    def read_body(self, listener: BodyListener) -> None:
        client = self.client
        if client is not None and self.body is client.body:
            client.read_body(listener)  # (the client's driver may send a 100 Continue first)
        else:
            self.body.attach(listener)

    def start_response(self, status: int, headers: Headers) -> None:
        """The gateway's own answer (an error): kept as it is."""
        self.response_started = True
        self.job.status, self.job.headers = status, headers

    def start_response_block(self, status: int, lines: bytes, framed: bool, request_id: bytes, nvcf_status: bytes) -> None:
        self.response_started = True
        self.from_instance = True
        self.job.status, self.job.headers = status, parse_header_block(lines)

    def send(self, data: bytes) -> None:
        if self.finished:
            return
        self.size += len(data)
        if self.size <= self.limit:
            self.parts.append(data)
            return
        if self.results is None or not self.from_instance or self.job.status >= 400:
            if self.results is None:  # compat off: no large results; too large to hold
                err = UpstreamUnavailable(f"the result is larger than {self.limit} bytes")
                ctype, body = err.body()
                self._stop(err.http_status, [(b"content-type", ctype)], body)
            return  # an error body past 5 MiB: its problem+json needs only the start
        spool = self.spool_file
        if spool is None:  # the body goes large: from here on it is written to a file
            self.spool_name = spool_path(self.results.directory, self.job.request_id.decode())
            spool = self.spool_file = _spool(self.spool_name, self.parts)
            self.parts = []
        spool.write(data)

    def flush(self) -> None:
        pass

    def end(self) -> None:
        if self.finished:
            return
        job = self.job
        if job.status >= 400 and self.from_instance and self.compat:  # the instance's error (the gateway's own stay as they are)
            job.headers, body = inference_problem(job.status, b"".join(self.parts))
            self._result(job.status, job.headers, body)
            return
        outputs = job.outputs
        if self.from_instance and self.results is not None and outputs is not None and (self.spool_file is not None or outputs.artifacts()):
            self.finished = True  # no more bytes; the zip is built off the loop
            asyncio.get_running_loop().create_task(self._go_large(self.results, outputs))
            return
        self._result(job.status, job.headers, b"".join(self.parts))

    async def _go_large(self, results: LargeResults, outputs: OutputDir) -> None:
        """The body (and artifacts) zipped; the answer is 302 with only the Location."""
        job = self.job
        rid = job.request_id.decode()
        spool = self.spool_file
        if spool is None:  # a small body with artifacts
            self.spool_name = spool_path(results.directory, rid)
            spool = self.spool_file = _spool(self.spool_name, self.parts)
        spool.close()
        try:
            name = await asyncio.to_thread(results.build, rid, self.spool_name, outputs)
        except OSError as exc:
            err = UpstreamUnavailable(f"the large result could not be stored: {exc.strerror}")
            ctype, body = err.body()
            self._result(err.http_status, [(b"content-type", ctype)], body)
            return
        if results.shared is not None:  # before the 302: its Location works on every replica at once
            await results.shared.store_zip(name, results.path_of(name))
        location = self.base_url + RESULTS_PATH + name.encode()
        self._result(302, [(b"location", location)], b"")

    def abort(self) -> None:
        if not self.finished:
            self._result(502, [], b"")

    def backlogged(self) -> bool:
        return False

    def when_writable(self, callback: Callable[[], None]) -> None:
        callback()

    def _stop(self, status: int, headers: Headers, body: bytes) -> None:
        """End the job with this result and stop its call (the instance's side is closed)."""
        self._result(status, headers, body)
        stop = self.on_disconnect
        self.on_disconnect = None
        if stop is not None:
            stop()

    def _result(self, status: int, headers: Headers, body: bytes) -> None:
        self.finished = True
        if self.spool_file is not None:
            self.spool_file.close()
            self.spool_file = None
            try:
                os.unlink(self.spool_name)
            except OSError:
                pass
        job = self.job
        job.call = None
        self.client = None  # the client connection is not held for the result's lifetime
        self.parts = []
        job.clean_up()
        if job.abandoned:
            return
        job.status, job.headers, job.body = status, headers, body
        job.done.set()
