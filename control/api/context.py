"""What the API handlers share: the store and the views of the running system."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fngate.control.counters import ControlCounters
from fngate.control.loadboard import LoadBoard
from fngate.control.store.base import StateStore

from .errors import BadRequest, UnsupportedMediaType


@dataclass(slots=True)
class ApiContext:
    store: StateStore
    admin_digest: str
    loadboard: LoadBoard
    capacity: Callable[[], list[dict[str, Any]]]  # [{name, gpu, ..., backend}]
    backends: frozenset[str] = field(default_factory=frozenset)  # known backend names ({} = from capacity)
    nca_id: str = "fngate"
    max_body: int = 1024 * 1024
    # (function doc, GPU spec) -> why no backend can run it, or None; asked before a deploy is recorded
    preflight: Callable[[dict[str, Any], dict[str, Any]], str | None] = field(default=lambda _fn, _spec: None)
    counters: ControlCounters = field(default_factory=ControlCounters)  # the control loops' (this replica's)
    # waits until the published routing reflects the store (control/api/routing_sync.py); None: no wait
    routing_caught_up: Callable[[], Awaitable[object]] | None = None


CONTEXT = web.AppKey("fngate.api.context", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.config_dict[CONTEXT]


def strip_nulls(value: Any) -> Any:
    """Leave out null fields at every depth (Jackson NON_NULL, as NVCF does)."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(strip_nulls(body)), status=status, content_type="application/json")


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


async def read_json_object(request: web.Request) -> dict[str, Any]:
    # NVCF (Spring) answers 415 to a body of any other type; a request that names no
    # type at all is read as JSON (fngate is lenient there)
    content_type = request.headers.get("Content-Type")
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(f"Content-Type '{content_type}' is not supported.")
    raw = await request.read()  # raises 413 past client_max_size
    if not raw.strip():
        raise BadRequest("Request body is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body
