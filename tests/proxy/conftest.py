"""Fixtures for the gateway tests: real sample upstreams on port 0 and an in-process
Gateway whose routing snapshot the test publishes."""

from __future__ import annotations

import socket
import uuid

import pytest
from aiohttp import web

from fngate.backends.samples import echo, sse
from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing import Endpoint, KeyGrant, RoutingTable, SnapshotHolder, VersionRoute, key_digest
from fngate.proxy.server import Gateway

KEY = "nvapi-test-key"
OTHER_KEY = "nvapi-other-key"
FID = str(uuid.UUID(int=1))
VID = str(uuid.UUID(int=2))
VID2 = str(uuid.UUID(int=3))


class Upstream:
    """A sample app (echo or sse) served in-process on a free port."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self.port = 0

    async def start(self) -> Upstream:
        await self.runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


class Env:
    """A running gateway plus helpers to publish routes."""

    def __init__(self, gateway: Gateway, holder: SnapshotHolder) -> None:
        self.gw = gateway
        self.holder = holder
        self.version = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gw.http_port}"

    def host(self, fid: str = FID, vid: str | None = None) -> str:
        return f"{vid}.{fid}.invocation.example.com" if vid else f"{fid}.invocation.example.com"

    def headers(self, key: str = KEY, fid: str = FID, vid: str | None = None, **extra: str) -> dict[str, str]:
        h = {"Host": self.host(fid, vid), "Authorization": f"Bearer {key}"}
        h.update(extra)
        return h

    def publish(self, routes: list[VersionRoute], keys: list[tuple[str, KeyGrant]] | None = None) -> RoutingTable:
        self.version += 1
        if keys is None:
            keys = [
                (key_digest(KEY), KeyGrant("k1", frozenset({"invoke_function"}), None, subject="alice")),
                (key_digest(OTHER_KEY), KeyGrant("k2", frozenset({"invoke_function"}), frozenset({"nope"}))),
            ]
        table = RoutingTable.build(self.version, routes, keys)
        self.holder.publish(table)
        return table


def route(*ports: int, fid: str = FID, vid: str = VID, status: str = "ACTIVE", **kw) -> VersionRoute:
    eps = tuple(Endpoint(f"{vid}-{i}", "127.0.0.1", p) for i, p in enumerate(ports))
    return VersionRoute(
        function_id=fid,
        version_id=vid,
        name="echo-fn",
        status=status,
        endpoints=eps,
        max_concurrency=kw.pop("max_concurrency", 4),
        instance_type="NCP.GPU.TEST_1x",
        backend="local",
        **kw,
    )


@pytest.fixture
async def echo_up():
    up = await Upstream(echo.make_app()).start()
    yield up
    await up.stop()


@pytest.fixture
async def sse_up():
    up = await Upstream(sse.make_app()).start()
    yield up
    await up.stop()


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return GatewayConfig(
        http_port=0, grpc_port=0, admin_port=0, idle_timeout=10, client_header_timeout=2, client_body_idle_timeout=2, keepalive_timeout=5
    )


@pytest.fixture
async def env(gateway_config):
    holder = SnapshotHolder()
    reports = []
    gw = Gateway(gateway_config, holder, "gw-test", reports.append)
    await gw.start()
    e = Env(gw, holder)
    e.reports = reports
    yield e
    await gw.stop(grace=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
