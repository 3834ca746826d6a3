"""The management API application: routes, and the one place errors become problem+json."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from fngate.proxy.routing.snapshot import key_digest

from .. import keys
from ..accounts import ensure_default_account
from ..loadboard import LoadBoard
from ..store.base import Conflict as StoreConflict
from ..store.base import StateStore, StoreUnavailable
from . import accounts, assets, console, deployments, functions, gpus, health, key_admin, key_introspect, prometheus, queues, sharing
from . import keys as key_routes
from . import ratelimit as ratelimit_routes
from . import secrets as secret_routes
from .auth import authenticate
from .context import CONTEXT, ApiContext, json_response
from .errors import ControlError, problem
from .params import bad_uuid_param

log = logging.getLogger("fngate.api")

MAX_BODY = 1024 * 1024  # management requests are small; larger bodies get 413


def _problem_response(status: int, detail: str | None, request: web.Request, headers: Mapping[str, str] | None = None) -> web.Response:
    resp = json_response(problem(status, detail, request.path), status=status)
    resp.content_type = "application/problem+json"
    if headers:
        resp.headers.update(headers)
    return resp


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        bad_id = bad_uuid_param(request.match_info)
        if bad_id is not None:
            await authenticate(request)  # 401 comes first, as NVCF's security filter does
            raise bad_id
        return await handler(request)
    except ControlError as exc:
        return _problem_response(exc.status, exc.detail, request)
    except StoreConflict:
        return _problem_response(409, "The resource changed concurrently; retry", request)
    except StoreUnavailable:  # Redis away for a moment: a retry soon will do (not a bug, not a 500)
        return _problem_response(503, "The state store is unreachable; retry shortly", request, {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = {
            404: f"No such resource: {request.method} {request.path}",
            405: f"Method {request.method} is not allowed on {request.path}",
            413: f"Request body is larger than the limit of {request.config_dict[CONTEXT].max_body} bytes",
        }.get(exc.status, exc.text)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _problem_response(exc.status, detail, request, allow)
    except Exception as exc:  # a bug: say so once in the log, answer 500
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _problem_response(500, f"Internal error: {type(exc).__name__}", request)


def make_app(
    store: StateStore,
    *,
    admin_key: str,
    loadboard: LoadBoard | None = None,
    capacity: Callable[[], list[dict[str, Any]]] = list,
    backends: frozenset[str] | set[str] = frozenset(),
    nca_id: str = "fngate",
    max_body: int = MAX_BODY,
    preflight: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None,
) -> web.Application:
    """The /v2/nvcf + /v1/keys API over `store`. `capacity()` lists the placeable
    instance types ({name, gpu, ..., backend}); `loadboard` feeds the queue endpoints."""
    from .openapi import routes as openapi_routes
    from .routing_sync import answer_after_routing

    # outermost first: the count sees the status the problem middleware answered with
    app = web.Application(middlewares=[prometheus.count_requests, problem_middleware, answer_after_routing], client_max_size=max_body)
    app[CONTEXT] = ApiContext(
        store=store,
        admin_digest=key_digest(admin_key),
        loadboard=loadboard or LoadBoard(),
        capacity=capacity,
        backends=frozenset(backends),
        nca_id=nca_id,
        max_body=max_body,
    )
    if preflight is not None:
        app[CONTEXT].preflight = preflight
    for table in (
        functions.routes,
        deployments.routes,
        queues.routes,
        gpus.routes,
        key_routes.routes,
        key_admin.routes,
        key_introspect.routes,
        sharing.routes,
        accounts.routes,
        secret_routes.routes,
        ratelimit_routes.routes,
        assets.routes,
        openapi_routes,
    ):
        app.add_routes(table)
    # the /v2/nvcf/accounts/{ncaId}/... super-admin twins of the account-scoped routes
    twinned = (
        functions.routes,
        deployments.routes,
        queues.routes,
        sharing.routes,
        secret_routes.routes,
        ratelimit_routes.routes,
        assets.routes,
    )
    app.add_routes(accounts.twin_routes(twinned))
    health.install(app)
    console.install(app)
    prometheus.install(app)

    async def record_admin_key(_app: web.Application) -> None:
        await keys.ensure_admin_record(store, admin_key, nca_id)
        await ensure_default_account(store, nca_id)

    app.on_startup.append(record_admin_key)
    return app
