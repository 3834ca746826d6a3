"""The LLM gateway's request handler: `Host: llm.<any domain>` on the gateway's HTTP port.

    POST /v1/chat/completions, /v1/responses, /v1/embeddings   -> a Call to the function
    GET  /v1/models                                            -> the caller's models
    GET  /healthz, /readyz (200, empty), /info (build version)

A routed request, in NVCF's order (spec part 2, 8.2-8.6): X-Priority refused; the whole
body read (it is small: a prompt); the routing key from `model`; the key checked
against it (generic errors); `model` validated and the endpoint's own fields; the
model's `uris` allow-list; the token limit admits the estimate; `model` rewritten to
the model name; the instance chosen (sticky per session, else the limiter's choice);
then the engine's Call, through an LlmExchange that reads the usage on the way back.

Everything is read from the routing snapshot: no store or Redis call per request."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from fngate import __version__
from fngate.proxy.calls.call import Call
from fngate.proxy.calls.metrics import UNKNOWN_FUNCTION
from fngate.proxy.calls.request_ids import new_request_id
from fngate.proxy.errors import ProxyError
from fngate.proxy.llm.errors import JSON, LlmError, generic_auth_error, message_body
from fngate.proxy.llm.exchange import LlmExchange
from fngate.proxy.llm.models import OTHER_KEY, ModelSpecs, is_uuid, request_model, routing_key, split_model
from fngate.proxy.llm.sticky import StickySessions, conversation_key, session_key, weight
from fngate.proxy.llm.token_limits import TokenLimits
from fngate.proxy.llm.usage import TokenMetrics
from fngate.proxy.routing.lookup import resolve
from fngate.proxy.routing.snapshot import RoutingTable, VersionRoute

if TYPE_CHECKING:
    from fngate.proxy.calls.call import Engine
    from fngate.proxy.calls.exchange import Exchange
    from fngate.proxy.routing.snapshot import KeyGrant

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"
MODELS = "/v1/models"
ROUTED = frozenset({CHAT, RESPONSES, EMBEDDINGS})
MAX_BODY = 32 << 20
MAX_EMBEDDING_INPUTS = 2048
LLM_HEAD_WINDOW = 600  # seconds for the instance's response head (a long answer without streaming)
PRIORITY_RESERVED = "X-Priority is a reserved header and cannot be set by the client"
BEARER_REQUIRED = "bearer authorization is required"
# llmConfig.routingMethod (nvcf-api.md 3): the instance a request without a session goes to.
# `power_of_two` (and no method, `groq_multiregion`: one region here) is the limiter's own
# choice, the less loaded of two random instances; these two choose here:
SPREAD_METHODS = frozenset({"round_robin", "random"})


def is_llm_host(authority: bytes) -> bool:
    """`llm.<domain>` (any domain, any case), as NVCF's `llm-api-gateway` route."""
    return authority[:4].lower() == b"llm." and len(authority) > 4


class _Body:
    """Collects a request body (acknowledged as it arrives), then hands it on once."""

    __slots__ = ("_ex", "chunks", "done", "size", "too_large")

    def __init__(self, ex: Exchange, done: Callable[[bytes | None], None]) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.done: Callable[[bytes | None], None] | None = done
        self._ex = ex

    def on_request_data(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_BODY:
            self.too_large = True
        else:
            self.chunks.append(data)
        self._ex.body.consumed(len(data))

    def on_request_end(self) -> None:
        done, self.done = self.done, None
        if done is not None:
            done(None if self.too_large else b"".join(self.chunks))

    def on_request_gone(self) -> None:
        self.done = None


class LlmGateway:
    """A RequestHandler for the `llm.` host (see the module docstring)."""

    __slots__ = ("_listing", "_turns", "enforce_uris", "engine", "metrics", "specs", "sticky", "token_limits")

    def __init__(self, engine: Engine, enforce_uris: bool = False) -> None:
        self.engine = engine
        self.specs = ModelSpecs()
        self.sticky = StickySessions()
        self.token_limits = TokenLimits(engine.rate_limits.bucket)
        self.token_limits.on_limited = engine.metrics.rate_limited
        self.metrics = TokenMetrics()
        # NVCF enforces `uris` for /v1/responses always, for chat and embeddings only when
        # MODEL_URI_ALLOWLIST_ENABLED (8.2): `enforce_uris` is that switch
        self.enforce_uris = enforce_uris
        self._listing: tuple[int, tuple[str, ...]] = (-1, ())  # table version -> LLM function ids
        self._turns: dict[str, int] = {}  # version id -> round_robin position

    # -- entry ----------------------------------------------------------------------------
    def start(self, ex: Exchange) -> None:
        started = time.monotonic()
        request_id = None
        openai = False
        priority = False
        for n, v in ex.headers:
            if n == b"x-request-id":
                request_id = v
            elif n == b"x-error-format":
                openai = v.strip().lower() == b"openai"
            elif n == b"x-priority":
                priority = True
        rid = _request_id(request_id)
        path = ex.target.split(b"?", 1)[0].decode("latin-1")
        label = path if path in ROUTED or path == MODELS else "none"
        try:
            if path in ROUTED:
                if ex.method != "POST":
                    raise LlmError(405, "Method Not Allowed", ((b"allow", b"POST"),), openai)
                if priority:
                    raise LlmError(400, PRIORITY_RESERVED, openai=openai)
                ex.read_body(_Body(ex, lambda body: self._routed(ex, body, rid, started, path, openai)))
                return
            if path in ("/healthz", "/readyz", "/info", MODELS):
                if ex.method not in ("GET", "HEAD"):
                    raise LlmError(405, "Method Not Allowed", ((b"allow", b"GET"),), openai)
                if path == "/info":
                    self._reply(ex, 200, orjson.dumps({"version": __version__, "service": "fngate-llm-gateway"}), rid)
                elif path == MODELS:
                    self._reply(ex, 200, self._models(ex, openai), rid)
                else:
                    self._reply(ex, 200, b"", rid)
                self.engine.metrics.observe(UNKNOWN_FUNCTION, 200, time.monotonic() - started, ex.method, label)
                return
            raise LlmError(404, "Not Found", openai=openai)
        except ProxyError as err:
            self._fail(ex, err, rid, started, label)

    def _reply(self, ex: Exchange, status: int, body: bytes, rid: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        head = [(b"content-length", b"%d" % len(body)), (b"x-request-id", rid), *headers]
        if body:
            head.append((b"content-type", JSON))
        ex.start_response(status, head)
        if body and ex.method != "HEAD":
            ex.send(body)
        ex.end()

    def _fail(self, ex: Exchange, err: ProxyError, rid: bytes, started: float, label: str, fid: str = UNKNOWN_FUNCTION) -> None:
        if not isinstance(err, LlmError):
            err = LlmError(err.http_status, err.detail or "error", err.headers)
        if not ex.finished and not ex.response_started:
            self._reply(ex, err.http_status, message_body(err.http_status, err.detail, err.openai), rid, err.headers)
        self.engine.metrics.nvcf.app_error(err.http_status)
        self.engine.metrics.observe(fid, err.http_status, time.monotonic() - started, ex.method, label)

    # -- a routed request -----------------------------------------------------------------
    def _routed(self, ex: Exchange, body: bytes | None, rid: bytes, started: float, path: str, openai: bool) -> None:
        fid = UNKNOWN_FUNCTION
        try:
            if body is None:
                raise LlmError(413, "request body too large", openai=openai)
            try:
                doc = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                raise LlmError(400, "request body is not valid JSON", openai=openai) from None
            if not isinstance(doc, dict):
                raise LlmError(400, "request body must be a JSON object", openai=openai)
            table = self.engine.holder.table
            key = routing_key(doc.get("model"))
            grant = route = None
            if key is not None:  # auth only once there is a routing key (8.3)
                grant, route = self._authorize(ex, table, key, doc, openai)
                fid = route.function_id
            try:
                served_key, name = split_model(request_model(doc) if key is not None else doc.get("model"))
            except ValueError as e:
                raise LlmError(400, str(e), openai=openai) from None
            if served_key != key:  # authorized for one function, served as another (8.2)
                raise LlmError(400, OTHER_KEY, openai=openai)
            assert grant is not None and route is not None  # a model that splits has a key
            _validate(path, doc, openai)
            spec = self.specs.of(route.llm_models).get(name)
            if spec is not None and (path == RESPONSES or self.enforce_uris) and not spec.allows(path):
                raise LlmError(400, f'model "{name}" does not support {path}', openai=openai)
            client_stream = bool(doc.get("stream")) if path != EMBEDDINGS else False
            charge = self.token_limits.admit(spec.token_rates if spec else (), grant.nca_id, fid, _estimate(path, doc), openai)
            doc["model"] = name
            if path == RESPONSES:
                doc["stream"] = True  # NVCF asks for the stream and collapses it when the client did not (8.5)
            method = spec.routing_method if spec is not None else ""
            session = session_key(doc, _header(ex, b"x-multi-turn-session-id"), path == RESPONSES)
            if session is None and path != EMBEDDINGS:
                session = conversation_key(doc, path == RESPONSES, method)
            extra: list[tuple[bytes, bytes]] = [(b"x-request-id", rid)]
            pin = None
            if session is not None:
                route, pin = self._sticky_route(table, route, grant, session)
                extra.append((b"x-multi-turn-session-id", session.encode("latin-1", "replace")))
            elif method in SPREAD_METHODS:
                route = self._spread(route, method)
        except ProxyError as err:
            self._fail(ex, err, rid, started, path, fid)
            return
        engine = self.engine
        engine.metrics.nvcf.invocation(route.function_id, route.version_id, grant.nca_id)
        wrapped = LlmExchange(
            ex,
            orjson.dumps(doc),
            extra,
            charge=charge,
            metrics=self.metrics,
            endpoint=path,
            function_id=fid,
            stream=client_stream,
            collapse=path == RESPONSES and not client_stream,
            openai=openai,
        )
        deadline = started + max(engine.config.default_poll_seconds, LLM_HEAD_WINDOW) + engine.config.header_grace
        call = Call(engine, wrapped, route, grant, rid, started, deadline, host_routed=False, endpoint=path)
        call.pin = pin  # a queued sticky request waits for its session's instance
        call.run()
        if call.obs is not None:  # the access log line carries the usage the instance reports
            call.obs.usage = wrapped.token_usage

    def _authorize(self, ex: Exchange, table: RoutingTable, key: str, doc: dict[str, Any], openai: bool) -> tuple[KeyGrant, VersionRoute]:
        auth = _header(ex, b"authorization")
        if auth is None or auth.strip()[:7].lower() != b"bearer ":
            raise LlmError(401, BEARER_REQUIRED, openai=openai)
        if not is_uuid(key):
            raise LlmError(400, "invalid request", openai=openai)
        try:
            grant = self.engine.keys.check(table, auth, key)
            return grant, resolve(table, key, None, grant)
        except ProxyError as err:
            raise generic_auth_error(err, openai) from None

    def _sticky_route(self, table: RoutingTable, route: VersionRoute, grant: KeyGrant, session: str) -> tuple[VersionRoute, str | None]:
        versions = table.invokable.get(route.function_id, ())
        if len(versions) > 1:  # the session's version too, by the same hash
            usable = [r for r in versions if grant.any_account or r.nca_id == grant.nca_id or grant.nca_id in r.authorized]
            if usable:
                route = max(usable, key=lambda r: weight(session, r.version_id))
        return self.sticky.narrow(route, session)

    def _spread(self, route: VersionRoute, method: str) -> VersionRoute:
        """`round_robin`: the next instance in turn that has a free slot; `random`: any one
        with a free slot. The route narrowed to it; when none is free, the route as is (the
        request waits in the version's queue for the first slot, wherever it frees)."""
        endpoints = route.endpoints
        if len(endpoints) < 2:
            return route
        limit = route.max_concurrency if route.max_concurrency > 0 else 1
        inflight = self.engine.limiter.in_flight
        if method == "random":
            free = [e for e in endpoints if not e.draining and inflight.get(e.id, 0) < limit]
            return replace(route, endpoints=(random.choice(free),)) if free else route
        n = len(endpoints)
        turn = self._turns.get(route.version_id, 0)
        for i in range(n):
            e = endpoints[(turn + i) % n]
            if not e.draining and inflight.get(e.id, 0) < limit:
                if len(self._turns) >= 4096:
                    self._turns.clear()
                self._turns[route.version_id] = (turn + i + 1) % n
                return replace(route, endpoints=(e,))
        return route

    # -- GET /v1/models -------------------------------------------------------------------
    def _models(self, ex: Exchange, openai: bool) -> bytes:
        auth = _header(ex, b"authorization")
        if auth is None or auth.strip()[:7].lower() != b"bearer ":
            raise LlmError(401, BEARER_REQUIRED, openai=openai)
        table = self.engine.holder.table
        keys = self.engine.keys
        try:
            grant = keys.check(table, auth, None)
        except ProxyError as err:
            raise generic_auth_error(err, openai) from None
        data = []
        for fid in self._llm_functions(table):
            try:
                keys.check(table, auth, fid)
                route = resolve(table, fid, None, grant)
            except ProxyError:
                continue
            names: dict[str, None] = {}
            for r in table.invokable.get(fid, ()):
                if r.nca_id == route.nca_id or grant.any_account:
                    names.update(dict.fromkeys(self.specs.of(r.llm_models)))
            data += [{"id": f"{fid}/{n}", "object": "model", "created": 0, "owned_by": route.nca_id} for n in names]
        return orjson.dumps({"object": "list", "data": data})

    def _llm_functions(self, table: RoutingTable) -> tuple[str, ...]:
        """The functions with models, computed once per routing table."""
        version, fids = self._listing
        if version != table.version:
            fids = tuple(sorted(fid for fid, routes in table.invokable.items() if any(r.llm_models for r in routes)))
            self._listing = (table.version, fids)
        return fids

    def render_metrics(self) -> str:
        return self.metrics.render()


def _header(ex: Exchange, name: bytes) -> bytes | None:
    for n, v in ex.headers:
        if n == name:
            return v
    return None


def _request_id(value: bytes | None) -> bytes:
    """The client's X-Request-ID when it is a sane token (visible ASCII, at most 128), else ours."""
    if value is not None:
        value = value.strip()
        if 0 < len(value) <= 128 and value.isascii() and all(33 <= c <= 126 for c in value):
            return value
    return new_request_id()


def _validate(path: str, doc: Mapping[str, Any], openai: bool) -> None:
    """The endpoint's own required fields, with NVCF's messages (8.4)."""
    if path == CHAT:
        messages = doc.get("messages")
        if not isinstance(messages, list) or not messages:
            raise LlmError(400, "messages is required", openai=openai)
    elif path == EMBEDDINGS:
        inp = doc.get("input")
        if inp is None or inp == "":
            raise LlmError(400, "input is required", openai=openai)
        if isinstance(inp, list):
            if not inp:
                raise LlmError(400, "'input' array must not be empty", openai=openai)
            if len(inp) > MAX_EMBEDDING_INPUTS:
                raise LlmError(400, f"'input' array must have at most {MAX_EMBEDDING_INPUTS} entries", openai=openai)
    elif path == RESPONSES and doc.get("input") is None:
        raise LlmError(400, "input is required", openai=openai)


def _estimate(path: str, doc: Mapping[str, Any]) -> int:
    """Tokens a request will likely cost before the instance says: about 4 characters a
    prompt token, plus the output it may ask for."""
    if path == CHAT:
        prompt: object = doc.get("messages")
        out = doc.get("max_completion_tokens") or doc.get("max_tokens") or 0
    elif path == RESPONSES:
        prompt, out = doc.get("input"), doc.get("max_output_tokens") or 0
    else:
        prompt, out = doc.get("input"), 0
    chars = len(orjson.dumps(prompt)) if prompt is not None else 0
    return chars // 4 + (out if isinstance(out, int) and out > 0 else 0)
