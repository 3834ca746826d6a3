"""Legacy path-routed invocation with polling (spec 5.5), the compat mode:

    POST /v2/nvcf/pexec/functions/{fid}[/versions/{vid}]   -> the function's inferenceUrl
    GET  /v2/nvcf/pexec/status/{reqId}

A result ready within the poll window is answered at once; a request still running
on an instance when the window ends gets 202 + NVCF-REQID and keeps running, and its
result (held whole, at most `pexec_max_result_bytes`) waits for polling for
`pexec_result_ttl`. A request no instance took within the window gets 504. With
`Accept: text/event-stream` the response streams straight through instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson

from fngate.proxy.calls.call import Call, Engine, answer_error
from fngate.proxy.calls.exchange import BodyListener, Exchange, Headers
from fngate.proxy.calls.metrics import UNKNOWN_FUNCTION
from fngate.proxy.calls.nvcf_metrics import path_endpoint
from fngate.proxy.errors import NotFound, PollTimeout, ProxyError, UpstreamUnavailable, status_for_nvcf
from fngate.proxy.routing.lookup import poll_seconds
from fngate.proxy.wire.headers import client_headers, parse_header_block

if TYPE_CHECKING:
    from fngate.proxy.calls.metrics import Metrics
    from fngate.proxy.calls.pexec_results import SharedResults
    from fngate.proxy.calls.siblings import Siblings
    from fngate.proxy.routing.snapshot import KeyGrant, VersionRoute


_NO_COMPAT = b"nvcf-feature-disable-worker-compatibility"


def _inference_problem(status: int, body: bytes) -> tuple[Headers, bytes]:
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


class Job:
    __slots__ = ("body", "call", "done", "expires", "function_id", "headers", "request_id", "status", "version_id")

    def __init__(self, request_id: bytes, function_id: str, version_id: str | None = None) -> None:
        self.request_id = request_id
        self.function_id = function_id
        self.version_id = version_id  # the version that ran it: a key pinned to it may poll
        self.done = asyncio.Event()
        self.status = 0
        self.headers: Headers = []
        self.body = b""
        self.expires = float("inf")
        self.call: Call | None = None  # while it runs


class ResultCollector(Exchange):
    """The client side of a pexec job's call: the same seam a client driver implements,
    collecting the answer in memory (at most `limit` body bytes) for the poll that
    fetches it. The request is the client's; the call's answer goes into the job."""

    __slots__ = ("client", "compat", "conn", "from_instance", "job", "limit", "parts", "size", "ttl")

    def __init__(self, client: Exchange, job: Job, limit: int, ttl: float, compat: bool = True) -> None:
        super().__init__(client.method, client.target, client.headers, client.authority, client.client_addr, client.http2, client.body)
        self.scheme = client.scheme
        self.expect_continue = client.expect_continue
        self.conn = client.conn  # the slot owner of the request (proxy/calls/request_ids.py)
        self.client: Exchange | None = client
        self.job = job
        self.limit = limit
        self.ttl = ttl
        self.parts: list[bytes] = []
        self.size = 0
        self.from_instance = False
        self.compat = compat  # worker compatibility mode: the instance's errors become problem+json

    def read_body(self, listener: BodyListener) -> None:
        client = self.client
        if client is not None:
            client.read_body(listener)

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
        if self.size > self.limit:  # too large to hold: the job fails, the instance's side is closed
            err = UpstreamUnavailable(f"the result is larger than {self.limit} bytes")
            ctype, body = err.body()
            self._stop(err.http_status, [(b"content-type", ctype)], body)
            return
        self.parts.append(data)

    def flush(self) -> None:
        pass

    def end(self) -> None:
        if self.finished:
            return
        job = self.job
        body = b"".join(self.parts)
        if job.status >= 400 and self.from_instance and self.compat:  # the instance's error (the gateway's own stay as they are)
            job.headers, body = _inference_problem(job.status, body)
        self._result(job.status, job.headers, body)

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
        job = self.job
        job.status, job.headers, job.body = status, headers, body
        job.call = None
        self.client = None  # the client connection is not held for the result's lifetime
        self.parts = []
        if job.expires != float("inf"):
            job.expires = time.monotonic() + self.ttl
        job.done.set()


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()


class Pexec:
    """The pexec handler: invocations by path and status polls (see the module docstring)."""

    def __init__(self, engine: Engine, siblings: Siblings | None = None, shared: SharedResults | None = None) -> None:
        self.engine = engine
        self.jobs: OrderedDict[bytes, Job] = OrderedDict()
        self.siblings = siblings  # the other workers, with --workers N > 1
        self.shared = shared  # results other gateways on the same Redis may poll (proxy/calls/pexec_results.py)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, ex: Exchange, request_id: bytes, started: float, metrics: Metrics | None = None) -> None:
        """Answer a /v2/nvcf/pexec/ request; `metrics`: where it counts (the gateway's)."""
        if self.siblings is not None:  # --workers N: the id names its worker
            request_id = self.siblings.tag(request_id)
        task = asyncio.get_running_loop().create_task(self._handle(ex, request_id, started, metrics or self.engine.metrics))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        ex.on_disconnect = lambda: _cancel(task)  # until a call takes the exchange over

    async def _handle(self, ex: Exchange, request_id: bytes, started: float, metrics: Metrics) -> None:
        metrics.in_flight += 1
        status = 0
        auth = poll_h = None
        for n, v in ex.headers:
            if n == b"authorization":
                auth = v
            elif n == b"nvcf-poll-seconds":
                poll_h = v
        try:
            status = await self._route(ex, request_id, auth, poll_h, started)
        except ProxyError as err:
            status = err.http_status
            answer_error(ex, err, request_id)
            if not isinstance(err, PollTimeout):  # (counted with its function id where it is raised)
                metrics.nvcf.app_error(status)
        except asyncio.CancelledError:  # the client went away while it waited
            status = 499
            metrics.client_disconnects += 1
            metrics.nvcf.app_error(status)
        finally:
            metrics.left()
            if status:  # (0: a call took the exchange over, and counts it)
                metrics.observe(UNKNOWN_FUNCTION, status, time.monotonic() - started, ex.method, path_endpoint(ex.target))

    async def _route(self, ex: Exchange, request_id: bytes, auth: bytes | None, poll_h: bytes | None, started: float) -> int:
        path = ex.target.split(b"?", 1)[0].decode("latin-1").rstrip("/").split("/")
        # ['', 'v2', 'nvcf', 'pexec', 'functions', fid, ('versions', vid)] | [..., 'status', reqId]
        if len(path) == 6 and path[4] == "status" and ex.method == "GET":
            return await self._status(ex, path[5].encode(), auth, poll_h, started)
        if path[4:5] == ["functions"] and ex.method == "POST" and (len(path) == 6 or (len(path) == 8 and path[6] == "versions")):
            return await self._invoke(ex, path[5].lower(), path[7].lower() if len(path) == 8 else None, request_id, auth, poll_h, started)
        raise NotFound("unknown pexec path")

    async def _invoke(
        self, ex: Exchange, fid: str, vid: str | None, request_id: bytes, auth: bytes | None, poll_h: bytes | None, started: float
    ) -> int:
        engine = self.engine
        cfg = engine.config
        accept = next((v for n, v in ex.headers if n == b"accept"), b"")
        sse = accept == b"text/event-stream"
        default = cfg.sse_pexec_poll_seconds if sse else cfg.default_poll_seconds
        route, grant, deadline = engine.authorize(fid, vid, auth, poll_h, started, default)  # key first, then the window, as NVCF
        poll = poll_seconds(poll_h, default)
        query = ex.target.partition(b"?")[2]
        target = route.inference_url.encode() + (b"?" + query if query else b"")
        # `nvcf-feature-disable-worker-compatibility: true` (spec part 2, 1.10): the instance's
        # answer passes as it is, and the instance is told so, as for host-routed calls
        compat = not any(n == _NO_COMPAT and v == b"true" for n, v in ex.headers)
        if sse:  # streams straight through
            Call(
                engine, ex, route, grant, request_id, started, deadline, target, host_routed=not compat, endpoint=path_endpoint(ex.target)
            ).run()
            return 0
        try:
            return await self._collect(ex, route, grant, request_id, poll, target, compat)
        finally:  # NVCF's latency series: from the version's choice to the answer (200, 202 or 504)
            engine.metrics.nvcf.invocation_ended(route.function_id, route.version_id, time.monotonic() - started)

    async def _collect(
        self, ex: Exchange, route: VersionRoute, grant: KeyGrant, request_id: bytes, poll: int, target: bytes, compat: bool
    ) -> int:
        """The result within the poll window (200), else 202 while an instance has it, else 504."""
        engine = self.engine
        cfg = engine.config
        self._prune()
        now = time.monotonic()
        job = Job(request_id, route.function_id, route.version_id)
        collector = ResultCollector(ex, job, cfg.pexec_max_result_bytes, cfg.pexec_result_ttl, compat)
        call = job.call = Call(
            engine, collector, route, grant, request_id, now, now + cfg.pexec_result_ttl, target, host_routed=not compat, tracked=False
        )
        call.run()
        try:
            await asyncio.wait_for(asyncio.shield(job.done.wait()), poll)
        except TimeoutError:
            if not call.sent:  # nobody took it: 504, forget it
                call.cancel()
                engine.metrics.nvcf.app_error(504, route.function_id)
                raise PollTimeout("no instance took the request within the poll window") from None
            job.expires = time.monotonic() + cfg.pexec_result_ttl
            self.jobs[request_id] = job
            if self.shared is not None:  # polls may reach another replica or worker
                self.shared.hold(job)
            ex.on_disconnect = None  # the client may go now; the job runs on (a body still on its way fails it)
            ex.start_response(202, [(b"content-length", b"0"), (b"nvcf-reqid", request_id), (b"nvcf-status", b"in-progress")])
            ex.end()
            return 202
        except asyncio.CancelledError:
            call.cancel()
            raise
        return self._answer(ex, job)

    def _answer(self, ex: Exchange, job: Job) -> int:
        ex.on_disconnect = None
        headers = [(n, v) for n, v in job.headers if n != b"content-length" and n != b"transfer-encoding"]
        headers.append((b"content-length", b"%d" % len(job.body)))
        ex.start_response(job.status, client_headers(headers, job.request_id, status_for_nvcf(job.status)))
        ex.send(job.body)
        ex.end()
        return job.status

    async def _status(self, ex: Exchange, request_id: bytes, auth: bytes | None, poll_h: bytes | None, started: float) -> int:
        engine = self.engine
        job = self.jobs.get(request_id)
        poll = poll_seconds(poll_h, engine.config.default_poll_seconds)
        if job is None or job.expires < time.monotonic():
            engine.keys.check(engine.holder.table, auth, None)
            siblings = self.siblings
            owner = siblings.owner_port(request_id) if siblings is not None else None
            if siblings is not None and owner is not None:  # another worker ran it: it answers
                siblings.relay(engine, ex, request_id, started, owner, poll)
                return 0
            if self.shared is not None:
                return await self._shared_status(ex, request_id, auth, poll)
            raise NotFound(f"Request '{request_id.decode('latin-1')}' not found")
        engine.keys.check(engine.holder.table, auth, job.function_id, job.version_id)
        if not job.done.is_set():
            try:
                await asyncio.wait_for(asyncio.shield(job.done.wait()), poll)
            except TimeoutError:
                ex.on_disconnect = None
                ex.start_response(202, [(b"content-length", b"0"), (b"nvcf-reqid", request_id), (b"nvcf-status", b"in-progress")])
                ex.end()
                return 202
        return self._answer(ex, job)

    async def _shared_status(self, ex: Exchange, request_id: bytes, auth: bytes | None, poll: int) -> int:
        """A poll for a request another gateway on the same Redis ran."""
        assert self.shared is not None
        found = await self.shared.find(request_id)
        if found is None:
            raise NotFound(f"Request '{request_id.decode('latin-1')}' not found")
        self.engine.keys.check(self.engine.holder.table, auth, found.function_id, found.version_id)
        if not found.status:
            found = await self.shared.wait(request_id, poll)
        if found is None:
            ex.on_disconnect = None
            ex.start_response(202, [(b"content-length", b"0"), (b"nvcf-reqid", request_id), (b"nvcf-status", b"in-progress")])
            ex.end()
            return 202
        job = Job(request_id, found.function_id, found.version_id)
        job.status, job.headers, job.body = found.status, found.headers, found.body
        return self._answer(ex, job)

    def _prune(self) -> None:
        now = time.monotonic()
        jobs = self.jobs
        for rid in [r for r, j in jobs.items() if j.expires < now]:
            del jobs[rid]
        while len(jobs) >= self.engine.config.pexec_max_results:
            _, old = jobs.popitem(last=False)
            if old.call is not None:
                old.call.cancel()

    def close(self) -> None:
        for job in self.jobs.values():
            if job.call is not None:
                job.call.cancel()
        self.jobs.clear()
        for task in list(self._tasks):
            task.cancel()
