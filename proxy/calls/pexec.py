"""Path-routed invocation with polling, NVCF's compat mode (spec part 2, section 1):

    POST /v2/nvcf/pexec/functions/{fid}[/versions/{vid}]   -> the function's inferenceUrl
    GET  /v2/nvcf/pexec/status/{reqId}
    POST /v2/nvcf/exec/functions/{fid}[/versions/{vid}]    the same in a JSON envelope
    GET  /v2/nvcf/exec/status/{reqId}                      (proxy/calls/exec_envelope.py)
    GET  /v2/nvcf/pexec/results/{name}                     a large result's Location

The answer within the poll window is passed on at once (200, the instance's status; 302
+ Location for a body over 5 MiB or with artifacts). A request an instance holds when
the window ends gets 202 (with the latest progress, if the instance wrote some, which
also ends a poll at once); a request no instance took by the window plus 2 s gets 504.
After a 202 the next poll must come within max(2 x poll seconds, 10 s), else the request
is cancelled and polls get 504 `worker did not acknowledge the status request.` until
1 h after the last 202; a delivered result is gone (a later poll: 404). With
`Accept: text/event-stream`, or compat turned off by the client, nothing waits here:
the answer streams straight through (or is collected as it is, without 302/progress).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from fngate.proxy.calls import exec_envelope
from fngate.proxy.calls.call import Call, Engine, answer_error
from fngate.proxy.calls.fresh_routing import authorize_fresh
from fngate.proxy.calls.metrics import UNKNOWN_FUNCTION
from fngate.proxy.calls.nvcf_metrics import path_endpoint
from fngate.proxy.calls.observation import metered, note
from fngate.proxy.calls.pexec_assets import HEADER as ASSET_HEADER
from fngate.proxy.calls.pexec_assets import AssetResolver, parse_asset_header
from fngate.proxy.calls.pexec_files import LargeResults, OutputDir, Progress, result_name_ok
from fngate.proxy.calls.pexec_jobs import Job, ResultCollector
from fngate.proxy.errors import BadRequest, GatewayTimeout, NotFound, PollTimeout, ProxyError
from fngate.proxy.routing.lookup import poll_seconds
from fngate.proxy.wire.headers import client_headers

if TYPE_CHECKING:
    from fngate.proxy.calls.exchange import Exchange, Headers, RequestBody
    from fngate.proxy.calls.metrics import Metrics
    from fngate.proxy.calls.pexec_assets import StagedAssets
    from fngate.proxy.calls.pexec_jobs import Answers
    from fngate.proxy.calls.pexec_results import SharedResults
    from fngate.proxy.calls.siblings import Siblings
    from fngate.proxy.routing.snapshot import KeyGrant, VersionRoute


_NO_COMPAT = b"nvcf-feature-disable-worker-compatibility"
TRACKING_SECONDS = 3600.0  # NVCF's requestToFunctionVersion stream: max_age 1 h from the last 202
NOT_ACKNOWLEDGED = "worker did not acknowledge the status request."
_PROGRESS_LOOK = 0.05  # how often a waiting poll looks at the progress file
_SENT_LOOK = 0.05  # ... and, in the 2 s grace, whether an instance took the request


def next_poll_within(poll: int) -> float:
    """How long a result waits for the next poll after a 202 (NVCF's worker)."""
    return max(2.0 * poll, 10.0)


def request_id_of(text: str) -> bytes:
    """The path's request id as NVCF's axum `Path<Uuid>` takes it (hyphenated or not, any
    case), in the hyphenated lower-case form ids are kept in; else 400."""
    try:
        return str(uuid.UUID(text)).encode()
    except ValueError:
        raise InvalidPath(f"Invalid URL: UUID parsing failed for `{text}`") from None


class InvalidPath(BadRequest):
    """axum's path rejection: a plain-text 400."""

    plain = True


class Passthrough:
    """How a pexec route answers (the Answers of proxy/calls/pexec_jobs.py)."""

    def result(self, ex: Exchange, job: Job) -> int:
        headers = [(n, v) for n, v in job.headers if n != b"content-length" and n != b"transfer-encoding"]
        headers.append((b"content-length", b"%d" % len(job.body)))
        ex.start_response(job.status, client_headers(headers, job.request_id, b"fulfilled" if job.status < 400 else b"errored"))
        ex.send(job.body)
        ex.end()
        return job.status

    def in_progress(self, ex: Exchange, request_id: bytes, progress: Progress | None) -> int:
        headers: Headers
        if progress is None:
            headers, body = [(b"content-length", b"0")], b""
        else:  # NVCF's worker: the partial response as JSON, the percentage in a header
            body = progress.body
            headers = [
                (b"content-type", b"application/json"),
                (b"nvcf-percent-complete", b"%d" % progress.percent),
                (b"content-length", b"%d" % len(body)),
            ]
        headers += [(b"nvcf-reqid", request_id), (b"nvcf-status", b"in-progress")]
        ex.start_response(202, headers)
        if body:
            ex.send(body)
        ex.end()
        return 202

    def timed_out(self, ex: Exchange, request_id: bytes, err: ProxyError) -> int:
        answer_error(ex, err, request_id)
        return err.http_status


PASSTHROUGH = Passthrough()


class Pexec:
    """The pexec/exec handler (see the module docstring)."""

    def __init__(self, engine: Engine, siblings: Siblings | None = None, shared: SharedResults | None = None) -> None:
        self.engine = engine
        self.jobs: dict[bytes, Job] = {}
        self.siblings = siblings  # the other workers, with --workers N > 1
        self.shared = shared  # results other gateways on the same Redis may poll (proxy/calls/pexec_results.py)
        cfg = engine.config
        self.results = LargeResults(cfg.large_results_dir, shared)
        self._tasks: set[asyncio.Task[None]] = set()
        # NVCF-INPUT-ASSET-REFERENCES: resolved through the control plane (proxy/calls/pexec_assets.py)
        self.assets = AssetResolver(cfg.asset_lookup_url, cfg.asset_lookup_key or "", cfg.asset_dir) if cfg.asset_lookup_url else None

    def start(self, ex: Exchange, request_id: bytes, started: float, metrics: Metrics | None = None) -> None:
        """Answer a /v2/nvcf/pexec/ or /v2/nvcf/exec/ request; `metrics`: where it counts."""
        if self.siblings is not None:  # --workers N: the id names its worker
            request_id = self.siblings.tag(request_id)
        task = asyncio.get_running_loop().create_task(self._handle(ex, request_id, started, metrics or self.engine.metrics))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        ex.on_disconnect = lambda: _cancel(task)  # until a call takes the exchange over

    async def _handle(self, ex: Exchange, request_id: bytes, started: float, metrics: Metrics) -> None:
        metrics.in_flight += 1
        status = 0
        observers = self.engine.observers
        # a status poll or a large result is the gateway's own answer: its line comes from here
        out = ex if observers is None or ex.method not in ("GET", "HEAD") else metered(ex)
        try:
            status = await self._route(out, request_id, started)
        except ProxyError as err:
            status = err.http_status
            answer_error(out, err, request_id)
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
                if out is not ex and observers is not None:
                    observers.own(out, request_id, started, status)

    async def _route(self, ex: Exchange, request_id: bytes, started: float) -> int:
        path = ex.target.split(b"?", 1)[0].decode("latin-1").rstrip("/").split("/")
        # ['', 'v2', 'nvcf', 'pexec'|'exec', 'functions', fid, ('versions', vid)] | [..., 'status', reqId]
        auth = poll_h = None
        for n, v in ex.headers:
            if n == b"authorization":
                auth = v
            elif n == b"nvcf-poll-seconds":
                poll_h = v
        exec_route = path[3] == "exec"
        if len(path) == 6 and path[4] == "status" and ex.method in ("GET", "HEAD"):
            answer = exec_envelope.ENVELOPE if exec_route else PASSTHROUGH
            # exec/status forwards no client header: the default window applies
            return await self._status(ex, request_id_of(path[5]), auth, None if exec_route else poll_h, answer)
        if path[4:5] == ["functions"] and ex.method == "POST" and (len(path) == 6 or (len(path) == 8 and path[6] == "versions")):
            fid, vid = path[5].lower(), path[7].lower() if len(path) == 8 else None
            if exec_route:
                req = await exec_envelope.read_request(ex)
                return await self.invoke_path(
                    ex, fid, vid, request_id, auth, req.poll, started, exec_envelope.ENVELOPE, req.headers, req.body, req.asset_ids
                )
            return await self.invoke_path(ex, fid, vid, request_id, auth, poll_h, started)
        if not exec_route and len(path) == 6 and path[4] == "results" and ex.method in ("GET", "HEAD"):
            return await self._large_result(ex, path[5], request_id)
        raise NotFound("unknown pexec path")

    async def invoke_path(
        self,
        ex: Exchange,
        fid: str,
        vid: str | None,
        request_id: bytes,
        auth: bytes | None,
        poll_h: bytes | None,
        started: float,
        answer: Answers | None = None,
        instance_headers: Headers | None = None,
        instance_body: RequestBody | None = None,
        asset_ids: list[str] | None = None,
    ) -> int:
        """A pexec invocation; exec passes its envelope (`answer`), the request the
        instance gets (`instance_headers`, `instance_body`) and its `asset_ids`."""
        answer = answer or PASSTHROUGH
        headers = ex.headers if instance_headers is None else instance_headers
        if asset_ids is None:  # a bad entry fails before anything else, as NVCF's header extractor
            asset_ids = parse_asset_header([v for n, v in ex.headers if n == ASSET_HEADER])
        engine = self.engine
        cfg = engine.config
        accept = next((v for n, v in headers if n == b"accept"), b"")
        sse = accept == b"text/event-stream"
        default = cfg.sse_pexec_poll_seconds if sse else cfg.default_poll_seconds
        # key first, then the window, as NVCF; once more with the newest table if it refused
        route, grant, deadline = await authorize_fresh(engine, lambda: engine.authorize(fid, vid, auth, poll_h, started, default))
        poll = poll_seconds(poll_h, default)
        staged = None
        if asset_ids and not sse:  # the caller's own assets only: another account's are not found
            if self.assets is None:
                raise NotFound(f"NotFound error: failed to find asset {asset_ids[0]}")
            staged = await self.assets.stage(grant.nca_id, asset_ids, request_id.decode())
        target = route.inference_url.encode()  # NVCF sends the function's inferenceUrl, without the client's query
        # `nvcf-feature-disable-worker-compatibility: true` (spec part 2, 1.3): the instance's
        # answer passes as it is, and the instance is told so, as for host-routed calls
        no_compat = any(n == _NO_COMPAT and v == b"true" for n, v in headers)
        compat = not sse and not no_compat
        if sse:  # streams straight through
            Call(
                engine, ex, route, grant, request_id, started, deadline, target, host_routed=no_compat, endpoint=path_endpoint(ex.target)
            ).run()
            return 0
        try:
            return await self._collect(ex, route, grant, request_id, poll, target, compat, answer, instance_headers, instance_body, staged)
        finally:  # NVCF's latency series: from the version's choice to the answer (200, 202 or 504)
            engine.metrics.nvcf.invocation_ended(route.function_id, route.version_id, time.monotonic() - started)

    async def _collect(
        self,
        ex: Exchange,
        route: VersionRoute,
        grant: KeyGrant,
        request_id: bytes,
        poll: int,
        target: bytes,
        compat: bool,
        answer: Answers,
        instance_headers: Headers | None,
        instance_body: RequestBody | None,
        staged: StagedAssets | None,
    ) -> int:
        """The result within the poll window, else 202 while an instance has it, else 504
        once the window and its 2 s grace passed without an instance taking it."""
        engine = self.engine
        cfg = engine.config
        self._prune()
        now = time.monotonic()
        outputs = OutputDir(cfg.output_dir, request_id.decode()) if compat else None
        if outputs is not None:
            try:
                outputs.create()
            except OSError:
                outputs = None  # (no output dir on this machine: no progress, no artifacts)
        job = Job(request_id, route.function_id, route.version_id, grant.nca_id, outputs, staged)
        collector = ResultCollector(
            ex,
            job,
            self.results if compat else None,
            compat,
            headers=instance_headers,
            body=instance_body,
            limit=cfg.pexec_max_result_bytes,
        )
        call = job.call = PexecCall(
            engine, collector, route, grant, request_id, now, now + TRACKING_SECONDS, target, host_routed=not compat, tracked=False
        )
        if staged is not None:
            call.extra = staged.header_lines  # NVCF-FUNCTION-ASSET-IDS, the worker's own header
        call.run()
        try:
            progress = await self._wait(job, poll)
            if progress is None and not job.done.is_set() and not call.sent:
                # the grace NVCF's IS gives the worker's answer: a request taken in it gets its 202
                grace_end = time.monotonic() + cfg.header_grace
                while not call.sent and not job.done.is_set() and time.monotonic() < grace_end:  # noqa: ASYNC110  # `sent` has no event
                    await asyncio.sleep(_SENT_LOOK)
                if not call.sent and not job.done.is_set():  # nobody took it: 504, forget it
                    call.cancel()
                    job.abandon()
                    engine.metrics.nvcf.app_error(504, route.function_id)
                    return answer.timed_out(ex, request_id, PollTimeout("no instance took the request within the poll window"))
        except asyncio.CancelledError:
            call.cancel()
            job.abandon()
            raise
        ex.on_disconnect = None
        if job.done.is_set():
            return answer.result(ex, job)
        self._track(job, poll)  # the client may go now; the job runs on (a body still on its way fails it)
        return answer.in_progress(ex, request_id, progress)

    async def _wait(self, job: Job, poll: int) -> Progress | None:
        """Until the result (then None, job.done set), a progress update, or the window's end."""
        outputs = job.outputs
        end = time.monotonic() + poll
        done = job.done
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(asyncio.shield(done.wait()), min(left, _PROGRESS_LOOK) if outputs is not None else left)
                return None
            except TimeoutError:
                pass
            if outputs is not None and job.call is not None and job.call.sent:
                update = outputs.progress()
                if update is not None:
                    return update

    def _track(self, job: Job, poll: int) -> None:
        """After a 202: polls find it for 1 h; the next must come within NVCF's wait."""
        job.tracked_until = time.monotonic() + TRACKING_SECONDS
        if self.shared is not None and job.request_id not in self.jobs:  # polls may reach another replica or worker
            self.shared.hold(job)
        self.jobs[job.request_id] = job
        job.expect_poll(next_poll_within(poll), self._give_up)

    def _give_up(self, job: Job) -> None:
        """No poll came in time (NVCF's worker): drop the result, here and in Redis. With
        Redis, a poll on another replica counts: the job waits on while those come."""
        if self.shared is None:
            job.abandon()
            return
        task = asyncio.get_running_loop().create_task(self._give_up_shared(job, self.shared, job.poll_timer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_up_shared(self, job: Job, shared: SharedResults, fired: asyncio.TimerHandle | None) -> None:
        within = job.poll_within
        polled_elsewhere = await shared.polled_within(job.request_id, within)
        if job.abandoned or job.poll_timer is not fired:
            return  # a poll here came meanwhile: it decides
        if polled_elsewhere:
            job.expect_poll(within, self._give_up)
            return
        job.abandon()
        shared.abandon(job)

    async def _status(self, ex: Exchange, request_id: bytes, auth: bytes | None, poll_h: bytes | None, answer: Answers) -> int:
        engine = self.engine
        job = self.jobs.get(request_id)
        poll = poll_seconds(poll_h, engine.config.default_poll_seconds)
        if job is None or job.tracked_until < time.monotonic():
            engine.keys.check(engine.holder.table, auth, None)
            siblings = self.siblings
            owner = siblings.owner_port(request_id) if siblings is not None else None
            if siblings is not None and owner is not None:  # another worker ran it: it answers
                siblings.relay(engine, ex, request_id, time.monotonic(), owner, poll)
                return 0
            if self.shared is not None:  # another replica or gateway on the same Redis may hold it
                return await self._shared_status(ex, request_id, auth, poll, answer)
            raise NotFound()  # NVCF: {"status":404,"title":"Not Found"}, no detail
        grant = engine.keys.check(engine.holder.table, auth, job.function_id, job.version_id)
        note(ex, request_id, job.function_id, job.version_id or "", grant.key_id)
        if job.abandoned:
            raise GatewayTimeout(NOT_ACKNOWLEDGED)
        job.stop_waiting()
        progress: Progress | None = None
        try:
            progress = await self._wait(job, poll)
        except asyncio.CancelledError:  # this poll went away: the job waits for the next as before
            if not job.done.is_set() or request_id in self.jobs:
                job.expect_poll(next_poll_within(poll), self._give_up)
            raise
        ex.on_disconnect = None
        if job.done.is_set():
            self.jobs.pop(request_id, None)  # delivered: NVCF purges the mapping
            if self.shared is not None and not await self.shared.claim_held(request_id):
                raise NotFound()  # a poll on another replica took it first
            return answer.result(ex, job)
        self._track(job, poll)
        return answer.in_progress(ex, request_id, progress)

    async def _large_result(self, ex: Exchange, name: str, request_id: bytes) -> int:
        """A large result's Location: no key (a presigned URL), valid 35 min."""
        found = self.results.open(name)
        if found is None:
            if self.shared is None or not result_name_ok(name):
                raise NotFound("the large result does not exist or has expired")
            return await self._shared_large_result(ex, await self.shared.fetch_zip(name), request_id)  # another replica built it
        size, f = found
        ex.on_disconnect = None
        try:
            ex.start_response(
                200,
                [
                    (b"content-type", b"application/zip"),
                    (b"content-length", b"%d" % size),
                    (b"nvcf-reqid", request_id),
                    (b"nvcf-status", b"fulfilled"),
                ],
            )
            if ex.method == "HEAD":
                ex.end()
                return 200
            while True:
                chunk = f.read(256 * 1024)
                if not chunk or ex.finished:
                    break
                ex.send(chunk)
                if ex.backlogged():
                    await _writable(ex)
            ex.end()
        finally:
            f.close()
        return 200

    async def _shared_large_result(self, ex: Exchange, data: bytes | None, request_id: bytes) -> int:
        """A zip another replica built, from Redis (proxy/calls/pexec_results.py store_zip)."""
        if data is None:
            raise NotFound("the large result does not exist or has expired")
        ex.on_disconnect = None
        headers = [(b"content-type", b"application/zip"), (b"content-length", b"%d" % len(data))]
        ex.start_response(200, [*headers, (b"nvcf-reqid", request_id), (b"nvcf-status", b"fulfilled")])
        if ex.method != "HEAD":
            view = memoryview(data)
            for at in range(0, len(data), 256 * 1024):
                if ex.finished:
                    break
                ex.send(bytes(view[at : at + 256 * 1024]))
                if ex.backlogged():
                    await _writable(ex)
        ex.end()
        return 200

    async def _shared_status(self, ex: Exchange, request_id: bytes, auth: bytes | None, poll: int, answer: Answers) -> int:
        """A poll for a request another gateway on the same Redis ran (proxy/calls/pexec_results.py)."""
        shared = self.shared
        assert shared is not None
        found = await shared.find(request_id)
        if found is None:
            raise NotFound()
        grant = self.engine.keys.check(self.engine.holder.table, auth, found.function_id, found.version_id)
        note(ex, request_id, found.function_id, found.version_id or "", grant.key_id)
        if found.abandoned:  # its gateway gave up waiting for a poll (NVCF's worker): 504 until it ages out
            raise GatewayTimeout(NOT_ACKNOWLEDGED)
        if not found.status:
            await shared.note_poll(request_id)  # the replica running it waits on (Pexec._give_up)
            found = await shared.wait(request_id, poll, found.progress_seq)
            if found is None:  # delivered to another poll meanwhile, or aged out
                raise NotFound()
            if found.abandoned:
                raise GatewayTimeout(NOT_ACKNOWLEDGED)
            if not found.status:  # still running: the latest progress its gateway published
                ex.on_disconnect = None
                return answer.in_progress(ex, request_id, found.progress)
        claimed = await shared.claim(request_id)  # exactly one poll, on any replica, gets it
        if claimed is None:  # another poll took it meanwhile: NVCF purged the mapping
            raise NotFound()
        job = Job(request_id, claimed.function_id, claimed.version_id or "", "", None)
        job.status, job.headers, job.body = claimed.status, claimed.headers, claimed.body
        ex.on_disconnect = None
        return answer.result(ex, job)

    def _prune(self) -> None:
        now = time.monotonic()
        jobs = self.jobs
        for rid in [r for r, j in jobs.items() if j.tracked_until < now]:
            jobs.pop(rid).abandon()
        cap = self.engine.config.pexec_max_results
        while len(jobs) >= cap:  # the oldest first (a dict keeps insertion order)
            jobs.pop(next(iter(jobs))).abandon()

    def close(self) -> None:
        if self.assets is not None:
            self.assets.close()
        for job in self.jobs.values():
            job.abandon()
        self.jobs.clear()
        for task in list(self._tasks):
            task.cancel()


class PexecCall(Call):
    """A Call that adds worker-owned header lines for the instance (NVCF-FUNCTION-ASSET-IDS)."""

    __slots__ = ("extra",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = b""

    def _request_head(self, body_line: bytes | None) -> bytes:
        head = super()._request_head(body_line)
        extra = self.extra
        return head[:-2] + extra + b"\r\n" if extra else head


def _writable(ex: Exchange) -> asyncio.Future[None]:
    """Resolves once the client takes more bytes (or went away)."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ex.when_writable(lambda: None if fut.done() else fut.set_result(None))
    return fut


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
