"""The admin listener: /metrics (Prometheus text), /healthz, /readyz. Off the hot
path, so aiohttp.web is fine here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from fngate.proxy.server import Gateway


def make_admin_app(gateway: Gateway) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        depth = {vid: len(st.queue) for vid, st in gateway.limiter.versions.items()}
        body = gateway.metrics.render(depth)
        if gateway.grpc is not None:  # gRPC calls beside the HTTP ones (proxy/grpc_metrics.py)
            body += gateway.grpc.metrics.render().encode()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        table = gateway.holder.table
        ready = gateway.serving and table.version > 0
        return web.json_response({"ready": ready, "routingVersion": table.version}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
