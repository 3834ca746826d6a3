"""GET /health on the API port, as NVCF's API answers it (spec part 2, 11.4): no auth,
200 {"status":"UP"} while the store answers, 503 {"status":"DOWN"} when it does not;
the verdict is cached for 2 s so a probe storm does not become a store storm."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from .context import ctx, json_response

CACHE_SECONDS = 2.0
STORE_TIMEOUT = 2.0

routes = web.RouteTableDef()
_VERDICT = web.AppKey("fngate.api.health", list)  # [checked_at monotonic, up?]


async def _store_up(request: web.Request) -> bool:
    try:
        await asyncio.wait_for(ctx(request).store.revision(), STORE_TIMEOUT)
    except Exception:  # any failure of the store is "down"; the reason is in the store's own logs
        return False
    return True


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    cache: list[float | bool] = request.config_dict.get(_VERDICT) or [0.0, False]
    now = time.monotonic()
    if now - float(cache[0]) >= CACHE_SECONDS:
        cache[:] = [now, await _store_up(request)]
    up = bool(cache[1])
    return json_response({"status": "UP" if up else "DOWN"}, status=200 if up else 503)


def install(app: web.Application) -> None:
    app[_VERDICT] = [0.0, False]
    app.add_routes(routes)
