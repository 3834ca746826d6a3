"""The admin listener: /metrics (Prometheus text), /healthz, /readyz. Off the hot
path, so aiohttp.web is fine here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from fngate.proxy.ops.build_mode import build_info_metric

if TYPE_CHECKING:
    from fngate.proxy.calls.metrics import Metrics
    from fngate.proxy.grpc.relay import GrpcHandler
    from fngate.proxy.ops.observability import Observability
    from fngate.proxy.routing.limiter import Limiter
    from fngate.proxy.routing.snapshot import SnapshotHolder


class AdminView(Protocol):
    """What the admin listener reads of the gateway (proxy/server.py passes itself)."""

    @property
    def limiter(self) -> Limiter: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def grpc(self) -> GrpcHandler | None: ...
    @property
    def holder(self) -> SnapshotHolder: ...
    @property
    def serving(self) -> bool: ...
    @property
    def observability(self) -> Observability | None: ...


def make_admin_app(gateway: AdminView) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        depth = {vid: len(st.queue) for vid, st in gateway.limiter.versions.items()}
        body = gateway.metrics.render(depth)
        if gateway.grpc is not None:  # gRPC calls beside the HTTP ones (proxy/grpc/metrics.py)
            body += gateway.grpc.metrics.render().encode()
        body += build_info_metric()
        if gateway.observability is not None:  # the access log's dropped lines
            body += gateway.observability.metrics()
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
