"""The control plane's internal routes for gateways in other processes (admin key only).

  GET /internal/v1/routing?after=V&wait=S   200 + RoutingTable JSON when a table newer
                                            than V exists (waiting up to S seconds), else 204;
                                            the delta from V when V is the table before
                                            the newest (proxy.routing.RoutingWire)
  PUT /internal/v1/load/{gateway_id}        LoadReport JSON -> the LoadBoard (204)

Plus RedisLoadReader: when the store is Redis, gateways SET `fngate:load:{id}`
(EX 10) instead, and this reader feeds those reports to the LoadBoard.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from fngate.control.loadboard import LoadBoard
from fngate.proxy.routing.snapshot import LOAD_PREFIX, LoadReport, RoutingWire, SnapshotHolder, key_digest

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("fngate.internal")

MAX_WAIT = 60.0


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return web.Response(status=status, body=body, content_type="application/problem+json")


def make_internal_app(holder: SnapshotHolder, wire: RoutingWire, loadboard: LoadBoard, admin_key: str) -> web.Application:
    admin_digest = key_digest(admin_key)

    @web.middleware
    async def admin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        if not token or not hmac.compare_digest(key_digest(token), admin_digest):
            return _problem(401, "Unauthorized", "the internal API needs the admin key as a Bearer token")
        return await handler(request)

    async def routing(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
            wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_WAIT)
        except ValueError:
            return _problem(400, "Bad Request", "'after' must be an integer and 'wait' a number of seconds")
        waiter = asyncio.ensure_future(holder.wait_newer_than(after, wait))
        closing_waiter = asyncio.ensure_future(closing.wait())
        try:
            await asyncio.wait({waiter, closing_waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing_waiter.cancel()
        table = waiter.result() if waiter.done() else holder.table
        waiter.cancel()
        if table.version <= after:
            return web.Response(status=204)
        body = wire.since(after) if wire.table.version == table.version else table.to_json()
        return web.Response(body=body, content_type="application/json")

    async def load(request: web.Request) -> web.Response:
        try:
            report = LoadReport.from_json(await request.read())
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _problem(400, "Bad Request", f"not a LoadReport: {exc}")
        if report.gateway_id != request.match_info["gateway_id"]:
            return _problem(400, "Bad Request", "gateway_id in the body does not match the path")
        loadboard.update(report)
        return web.Response(status=204)

    closing = asyncio.Event()  # shutting down: answer waiting long-polls now, not after `wait`

    async def on_shutdown(_app: web.Application) -> None:
        closing.set()

    app = web.Application(middlewares=[admin_only], client_max_size=8 * 1024 * 1024)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/routing", routing)
    app.router.add_put("/load/{gateway_id}", load)
    return app


def mount_internal_api(app: web.Application, holder: SnapshotHolder, wire: RoutingWire, loadboard: LoadBoard, admin_key: str) -> None:
    app.add_subapp("/internal/v1", make_internal_app(holder, wire, loadboard, admin_key))


class RedisLoadReader:
    """Polls `fngate:load:*` (gateways write them with a 10 s expiry) into the LoadBoard."""

    def __init__(self, redis: aioredis.Redis, loadboard: LoadBoard, interval: float = 0.5) -> None:
        self.redis = redis
        self.loadboard = loadboard
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def read_once(self) -> int:
        keys = [k async for k in self.redis.scan_iter(match=LOAD_PREFIX + "*", count=100)]
        if not keys:
            return 0
        n = 0
        for raw in await self.redis.mget(keys):
            if raw is None:
                continue
            try:
                self.loadboard.update(LoadReport.from_json(raw))
                n += 1
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("ignoring a malformed load report in Redis")
        return n

    async def _run(self) -> None:
        while True:
            try:
                await self.read_once()
            except Exception as exc:  # Redis away for a moment: the board goes stale, then recovers
                log.warning("reading load reports from Redis: %s", exc)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-load-reader")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
