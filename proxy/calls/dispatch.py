"""The gateway's RequestHandler: which handler answers a request, from its head alone.

- a `function-id` header, or a Host of the form `{fid}.invocation.<domain>`: a Call
  to one of the function's instances (proxy/calls/call.py), once the key check passed;
- `/v2/nvcf/pexec/...`, `/v2/nvcf/exec/...` (path-routed, polled: proxy/calls/pexec.py);
- a Host of the form `llm.<domain>`: the LLM gateway (proxy/llm/), given by the server;
- `/health`, `/v2/health/ready`: the gateway's own answer (proxy/calls/health.py);
- anything else: 404.

The path routes (the last three) answer CORS as NVCF does (proxy/calls/cors.py).

The client drivers receive this object through their constructor; it imports none of them.
"""

from __future__ import annotations

import time
from time import monotonic
from typing import TYPE_CHECKING

from fngate.proxy.calls.call import Call, Engine, answer_error
from fngate.proxy.calls.cors import apply_cors, pexec_allow
from fngate.proxy.calls.exchange import RequestHandler
from fngate.proxy.calls.fresh_routing import may_be_stale, retry_after_refresh
from fngate.proxy.calls.health import HEALTH_PATHS, answer_health
from fngate.proxy.calls.metrics import UNKNOWN_FUNCTION
from fngate.proxy.calls.nvcf_metrics import TLB, UNKNOWN_ENDPOINT, path_endpoint
from fngate.proxy.calls.observation import metered
from fngate.proxy.calls.request_ids import new_request_id
from fngate.proxy.errors import NotFound, ProxyError
from fngate.proxy.routing.lookup import target_from_headers, target_from_host

if TYPE_CHECKING:
    from fngate.proxy.calls.exchange import Exchange
    from fngate.proxy.calls.observation import Observers
    from fngate.proxy.calls.pexec import Pexec

PEXEC_PREFIX = b"/v2/nvcf/pexec/"
EXEC_PREFIX = b"/v2/nvcf/exec/"


class Invocations:
    __slots__ = ("engine", "llm", "pexec")

    def __init__(self, engine: Engine, pexec: Pexec | None = None, llm: RequestHandler | None = None) -> None:
        self.engine = engine
        self.pexec = pexec
        self.llm = llm  # `Host: llm.<domain>`: the LLM gateway (proxy/llm/gateway.py)

    def start(self, ex: Exchange) -> None:
        authority = ex.authority
        # (one-byte slices are cached; `authority[:1] in b"lL"` would raise and clear a TypeError)
        if self.llm is not None and (authority[:1] == b"l" or authority[:1] == b"L") and authority[:4].lower() == b"llm.":
            self.llm.start(ex)
            return
        started = monotonic()  # (bound at import: no module attribute lookup per request)
        request_id = new_request_id()
        engine = self.engine
        fid_h = vid_h = auth = poll_h = None
        for n, v in ex.headers:
            if n == b"authorization":
                auth = v
            elif n == b"function-id":
                fid_h = v
            elif n == b"function-version-id":
                vid_h = v
            elif n == b"nvcf-poll-seconds":
                poll_h = v
        endpoint = TLB  # NVCF's route label (proxy/calls/nvcf_metrics.py)
        fid = vid = None
        try:
            if fid_h is not None:
                fid, vid = target_from_headers(fid_h, vid_h)
            else:
                target = ex.target
                if (target[:15] == PEXEC_PREFIX or target[:14] == EXEC_PREFIX) and self.pexec is not None:
                    out = ex if engine.observers is None else metered(ex)
                    if apply_cors(out, pexec_allow(target)):  # a preflight, answered
                        self._answered(out, request_id, started, path_endpoint(target))
                        return
                    self.pexec.start(ex, request_id, started)
                    return
                if target in HEALTH_PATHS:
                    out = ex if engine.observers is None else metered(ex)
                    if not apply_cors(out, b"GET,HEAD"):
                        answer_health(out)
                    self._answered(out, request_id, started, path_endpoint(target))
                    return
                hit = target_from_host(ex.authority.decode("latin-1"))
                if hit is None:
                    endpoint = UNKNOWN_ENDPOINT
                    out = ex if engine.observers is None else metered(ex)
                    if apply_cors(out, None):
                        self._answered(out, request_id, started, endpoint)
                        return
                    raise NotFound("No function matches the request's Host or function-id header")
                fid, vid = hit
            route, grant, deadline = engine.authorize(fid, vid, auth, poll_h, started)
        except ProxyError as err:  # not routed, or not authenticated: no label of its own
            if fid is not None and may_be_stale(engine, err):  # maybe only not here yet: fetch, try once more
                self._after_refresh(ex, fid, vid, auth, poll_h, started, request_id, endpoint)
                return
            self._refused(ex, err, request_id, started, endpoint)
            return
        Call(engine, ex, route, grant, request_id, started, deadline).run()

    @property
    def observers(self) -> Observers | None:
        """The gateway's observers, when on (the drivers log their refusals there)."""
        return self.engine.observers

    def _answered(self, ex: Exchange, request_id: bytes, started: float, endpoint: str) -> None:
        """The gateway answered `ex` itself (200: health, a preflight): its metrics and line."""
        engine = self.engine
        engine.metrics.observe(UNKNOWN_FUNCTION, 200, time.monotonic() - started, ex.method, endpoint)
        if engine.observers is not None:
            engine.observers.own(ex, request_id, started, 200)

    def _refused(self, ex: Exchange, err: ProxyError, request_id: bytes, started: float, endpoint: str) -> None:
        metrics = self.engine.metrics
        sent = answer_error(ex, err, request_id)
        metrics.nvcf.app_error(err.http_status)
        metrics.observe(UNKNOWN_FUNCTION, err.http_status, time.monotonic() - started, ex.method, endpoint)
        if self.engine.observers is not None:
            self.engine.observers.refused(ex, request_id, started, err.http_status, sent)

    def _after_refresh(
        self,
        ex: Exchange,
        fid: str,
        vid: str | None,
        auth: bytes | None,
        poll_h: bytes | None,
        started: float,
        request_id: bytes,
        endpoint: str,
    ) -> None:
        engine = self.engine
        retry_after_refresh(
            engine,
            ex,
            lambda: engine.authorize(fid, vid, auth, poll_h, started),
            lambda got: Call(engine, ex, got[0], got[1], request_id, started, got[2]).run(),
            lambda err: self._refused(ex, err, request_id, started, endpoint),
        )
