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
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson

from fngate.proxy.errors import NotFound, PollTimeout, ProxyError, UpstreamUnavailable, status_for_nvcf
from fngate.proxy.exchange import ClientGone, Exchange, Headers
from fngate.proxy.headers import client_headers
from fngate.proxy.lookup import poll_seconds, resolve

if TYPE_CHECKING:
    from fngate.proxy.forward import Call, Forwarder
    from fngate.proxy.routing import KeyGrant, VersionRoute
    from fngate.proxy.siblings import Siblings


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
    __slots__ = ("body", "call", "done", "expires", "function_id", "headers", "request_id", "status", "task", "version_id")

    def __init__(self, request_id: bytes, function_id: str, version_id: str | None = None) -> None:
        self.request_id = request_id
        self.function_id = function_id
        self.version_id = version_id  # the version that ran it: a key pinned to it may poll
        self.done = asyncio.Event()
        self.status = 0
        self.headers: Headers = []
        self.body = b""
        self.expires = float("inf")
        self.call: Call | None = None
        self.task: asyncio.Task[None] | None = None


class Pexec:
    def __init__(self, forwarder: Forwarder) -> None:
        self.fw = forwarder
        self.jobs: OrderedDict[bytes, Job] = OrderedDict()
        self.siblings: Siblings | None = None  # the other workers, with --workers N > 1

    async def handle(self, ex: Exchange, request_id: bytes, auth: bytes | None, poll_h: bytes | None, call: Call) -> int:
        path = ex.target.split(b"?", 1)[0].decode("latin-1").rstrip("/").split("/")
        # ['', 'v2', 'nvcf', 'pexec', 'functions', fid, ('versions', vid)] | [..., 'status', reqId]
        if len(path) == 6 and path[4] == "status" and ex.method == "GET":
            return await self._status(ex, path[5].encode(), auth, poll_h, call)
        if path[4:5] == ["functions"] and ex.method == "POST" and (len(path) == 6 or (len(path) == 8 and path[6] == "versions")):
            return await self._invoke(ex, path[5].lower(), path[7].lower() if len(path) == 8 else None, request_id, auth, poll_h, call)
        raise NotFound("unknown pexec path")

    async def _invoke(
        self, ex: Exchange, fid: str, vid: str | None, request_id: bytes, auth: bytes | None, poll_h: bytes | None, call: Call
    ) -> int:
        fw = self.fw
        table = fw.holder.table
        grant = fw.keys.check(table, auth, fid, vid)
        route = resolve(table, fid, vid, grant)
        accept = next((v for n, v in ex.headers if n == b"accept"), b"")
        sse = accept == b"text/event-stream"
        cfg = fw.config
        poll = poll_seconds(poll_h, cfg.sse_pexec_poll_seconds if sse else cfg.default_poll_seconds)
        query = ex.target.partition(b"?")[2]
        target = route.inference_url.encode() + (b"?" + query if query else b"")
        now = time.monotonic()
        if sse:
            return await fw.forward(ex, route, grant, request_id, now + poll + cfg.header_grace, call, target, False)
        self._prune()
        job = Job(request_id, route.function_id, route.version_id)
        job.task = asyncio.get_running_loop().create_task(self._run(job, ex, route, grant, target, now + cfg.pexec_result_ttl))
        try:
            await asyncio.wait_for(asyncio.shield(job.done.wait()), poll)
        except TimeoutError:
            if job.call is None or job.call.conn is None:  # nobody took it: 504, forget it
                job.task.cancel()
                raise PollTimeout("no instance took the request within the poll window") from None
            job.expires = time.monotonic() + cfg.pexec_result_ttl
            self.jobs[request_id] = job
            ex.on_disconnect = None  # the client may go now; the job runs on
            body = b""
            ex.start_response(202, [(b"content-length", b"0"), (b"nvcf-reqid", request_id), (b"nvcf-status", b"in-progress")])
            ex.write_nowait(body)
            ex.end()
            return 202
        except asyncio.CancelledError:
            job.task.cancel()
            raise
        return self._answer(ex, job)

    async def _run(self, job: Job, ex: Exchange, route: VersionRoute, grant: KeyGrant, target: bytes, deadline: float) -> None:
        from fngate.proxy.forward import Call

        fw = self.fw
        call = job.call = Call()
        try:
            status, headers = await fw.call_instance(ex, route, grant, job.request_id, deadline, call, target, False)
            parts, size, limit = [], 0, fw.config.pexec_max_result_bytes
            conn = call.conn
            assert conn is not None and conn.body is not None  # call_instance returned: a response is in
            response_body = conn.body
            while True:
                chunk = await response_body.read()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise UpstreamUnavailable(f"the result is larger than {limit} bytes")
                parts.append(chunk)
            job.status, job.headers, job.body = status, headers, b"".join(parts)
            if status >= 400:
                job.headers, job.body = _inference_problem(status, job.body)
        except ProxyError as err:
            ctype, body = err.body()
            job.status, job.body = err.http_status, body
            job.headers = [(b"content-type", ctype)] if ctype else []
        except (ClientGone, ConnectionError, OSError) as exc:
            job.status, job.body = 502, b""
            job.headers = []
            fw.metrics.upstream_error(type(exc).__name__)
        finally:
            call.done(fw.pool)
            job.done.set()
            if job.expires != float("inf"):
                job.expires = time.monotonic() + fw.config.pexec_result_ttl

    def _answer(self, ex: Exchange, job: Job) -> int:
        headers = [(n, v) for n, v in job.headers if n != b"content-length" and n != b"transfer-encoding"]
        headers.append((b"content-length", b"%d" % len(job.body)))
        ex.start_response(job.status, client_headers(headers, job.request_id, status_for_nvcf(job.status)), flush=False)
        ex.write_nowait(job.body)
        ex.end()
        return job.status

    async def _status(self, ex: Exchange, request_id: bytes, auth: bytes | None, poll_h: bytes | None, call: Call) -> int:
        fw = self.fw
        job = self.jobs.get(request_id)
        if job is None or job.expires < time.monotonic():
            fw.keys.check(fw.holder.table, auth, None)
            siblings = self.siblings
            owner = siblings.owner_port(request_id) if siblings is not None else None
            if siblings is not None and owner is not None:  # another worker ran it: it answers
                poll = poll_seconds(poll_h, fw.config.default_poll_seconds)
                return await siblings.relay(fw, ex, call, owner, poll)
            raise NotFound(f"Request '{request_id.decode('latin-1')}' not found")
        fw.keys.check(fw.holder.table, auth, job.function_id, job.version_id)
        if not job.done.is_set():
            poll = poll_seconds(poll_h, fw.config.default_poll_seconds)
            try:
                await asyncio.wait_for(asyncio.shield(job.done.wait()), poll)
            except TimeoutError:
                ex.start_response(202, [(b"content-length", b"0"), (b"nvcf-reqid", request_id), (b"nvcf-status", b"in-progress")])
                ex.end()
                return 202
        return self._answer(ex, job)

    def _prune(self) -> None:
        now = time.monotonic()
        jobs = self.jobs
        for rid in [r for r, j in jobs.items() if j.expires < now]:
            del jobs[rid]
        while len(jobs) >= self.fw.config.pexec_max_results:
            _, old = jobs.popitem(last=False)
            if old.task is not None:
                old.task.cancel()

    def close(self) -> None:
        for job in self.jobs.values():
            if job.task is not None:
                job.task.cancel()
        self.jobs.clear()
