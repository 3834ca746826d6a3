"""`fngate serve`: the composition root that wires the control plane together.

Each step below starts one part and registers how to stop it; they run in order
(store -> API -> backends -> control loops -> gateway) and stop in reverse. A step
reads what earlier steps left on the Server and adds to `self.ready`, the JSON
written to --ready-file once everything listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from backends.inventory import Inventory

from . import keys
from .api import make_app
from .config import ServeConfig
from .loadboard import LoadBoard
from .store.base import StateStore


class Server:
    def __init__(self, cfg: ServeConfig, out=sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.stack = AsyncExitStack()
        self.ready: dict[str, Any] = {}
        self.store: StateStore | None = None
        self.admin_key = ""
        self.loadboard = LoadBoard()
        self.inventory = Inventory.from_config(cfg.section("inventory"))
        self.backend_name = "local"

    # -- wiring steps, in start order ------------------------------------------

    async def start_store(self) -> None:
        cfg = self.cfg
        if cfg.store_is_redis:
            from .store.redis import RedisStore

            self.store = await RedisStore.open(cfg.store)
        else:
            from .store.sqlite import SqliteStore

            self.store = await SqliteStore.open(cfg.data_dir / "fngate.db")
        self.stack.push_async_callback(self.store.aclose)

    async def start_api(self) -> None:
        cfg = self.cfg
        self.admin_key, generated = keys.load_or_create_admin_key(cfg.data_dir)
        app = make_app(
            self.store,
            admin_key=self.admin_key,
            loadboard=self.loadboard,
            capacity=self.capacity,
            nca_id=cfg.nca_id,
            max_body=cfg.max_body,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, cfg.host, cfg.api_port, ssl_context=self._ssl_context())
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if cfg.tls_cert else "http"
        self.ready["api_url"] = f"{scheme}://{_url_host(cfg.host)}:{port}"
        self.ready["api_port"] = port
        self.ready["admin_key"] = self.admin_key
        self.api_app = app
        if generated:
            self._say(f"fngate: generated the admin key (saved to {cfg.data_dir / keys.ADMIN_KEY_FILE}): {self.admin_key}")

    def capacity(self) -> list[dict[str, Any]]:
        """What deployments may ask for; replaced by the backends' own capacity when they are wired."""
        return [{**entry, "backend": self.backend_name} for entry in self.inventory.capacity()]

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.start_store()
            await self.start_api()
        except BaseException:
            await self.stack.aclose()
            raise
        self._say(f"fngate: management API on {self.ready['api_url']} (OpenAPI at {self.ready['api_url']}/openapi.json)")
        self._say(f"fngate: store: {'redis' if self.cfg.store_is_redis else self.cfg.data_dir / 'fngate.db'}")
        if self.cfg.ready_file is not None:
            _write_private_json(self.cfg.ready_file, self.ready)

    async def stop(self) -> None:
        await self.stack.aclose()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.cfg.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        return context

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _write_private_json(path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)  # readers never see a half-written file


async def run(cfg: ServeConfig) -> None:
    """Serve until SIGINT/SIGTERM, then stop every part in reverse order."""
    server = Server(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        server._say("fngate: shutting down")
        with contextlib.suppress(Exception):
            await server.stop()


def main(cfg: ServeConfig) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(cfg))
    return 0
