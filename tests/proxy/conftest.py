"""Fixtures for the gateway tests: real sample upstreams on port 0 and an in-process
Gateway whose routing snapshot the test publishes."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from aiohttp import web

from fngate.backends.samples import echo, sse
from fngate.proxy.config import GatewayConfig
from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, RoutingTable, SnapshotHolder, VersionRoute, key_digest
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


class LockstepSse:
    """An SSE instance that writes event n+1 only once the test says the client has event n.

    A gateway that held events back (buffered, batched, waited for more bytes) would never
    deliver event n, so the instance would give up waiting and end the stream with
    `data: held back`; nothing here depends on how fast the machine is."""

    def __init__(self, events: int, patience: float = 20.0) -> None:
        self.events = events
        self.patience = patience
        self.seen = [asyncio.Event() for _ in range(events)]
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.stream)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for n in range(self.events):
            await resp.write(b"data: %d\n\n" % n)
            try:
                await asyncio.wait_for(self.seen[n].wait(), self.patience)
            except TimeoutError:
                await resp.write(b"data: held back\n\n")
                break
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def client_saw(self, line: str) -> None:
        """Feed every line the client reads; acknowledges `data: <n>`."""
        if line.startswith("data: ") and line[6:].isdigit():
            self.seen[int(line[6:])].set()


@pytest.fixture
async def lockstep_up():
    sse_app = LockstepSse(events=5)
    up = await Upstream(sse_app.app).start()
    up.lockstep = sse_app
    yield up
    await up.stop()


@pytest.fixture
def gateway_config(tmp_path) -> GatewayConfig:
    return GatewayConfig(
        http_port=0,
        grpc_port=0,
        admin_port=0,
        idle_timeout=10,
        client_header_timeout=2,
        client_body_idle_timeout=2,
        keepalive_timeout=5,
        output_dir=str(tmp_path / "response"),  # the pexec request directories (not /var/inf)
        asset_dir=str(tmp_path / "inputAssets"),
        large_results_dir=str(tmp_path / "large"),
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


class RawInstance:
    """An HTTP/1.1 instance on a raw socket that records every request head exactly as
    the gateway wrote it (no server library normalising names or joining duplicates).
    Answers `200 ok` once the Content-Length / chunked body is read; `?delay=S` waits
    S seconds before answering."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> RawInstance:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in self._writers:
                w.close()
            await self._server.wait_closed()

    def fields(self, head: bytes) -> list[tuple[bytes, bytes]]:
        """(lower-case name, value) of every field line of a recorded head."""
        out = []
        for line in head.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.partition(b":")
                out.append((name.lower(), value.strip()))
        return out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                fields = dict(self.fields(head))
                if b"content-length" in fields:
                    await reader.readexactly(int(fields[b"content-length"]))
                elif fields.get(b"transfer-encoding") == b"chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                target = head.split(b" ", 2)[1]
                if b"delay=" in target:
                    await asyncio.sleep(float(target.split(b"delay=")[1].split(b"&")[0]))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def raw_up():
    up = await RawInstance().start()
    yield up
    await up.stop()
