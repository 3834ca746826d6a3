"""`--workers N > 1`: N gateway processes sharing the listening ports with SO_REUSEPORT.

The parent picks concrete ports first (binding port 0 with SO_REUSEPORT and keeping
that socket, unlistened, so the port stays reserved), then starts each worker as
`python -m fngate.proxy.workers '<json>'`. A worker runs uvloop, gets its routing snapshot
from a RoutingSource (ControlHttpSource, or RedisSource when the store is Redis),
sends its LoadReports through the same source, and prints one `ready` line.

Each worker also gets two private loopback ports, reserved the same way: one for its
siblings' pexec status polls (proxy/siblings.py), one for its admin app. The parent
itself serves the public admin port for all workers (proxy/worker_admin.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys
from typing import Any, overload

from fngate.proxy.config import LOOPBACK, GatewayConfig
from fngate.proxy.worker_admin import WorkerAdmin


@overload
def _reserve(host: str, port: int) -> tuple[socket.socket, int]: ...
@overload
def _reserve(host: str, port: int | None) -> tuple[socket.socket | None, int | None]: ...
def _reserve(host: str, port: int | None) -> tuple[socket.socket | None, int | None]:
    if port is None:
        return None, None
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s, s.getsockname()[1]


class WorkerPool:
    """Starts and stops the worker processes. `source` is {"api": url, "key": admin key}
    or {"redis": url}."""

    def __init__(self, config: GatewayConfig, source: dict[str, str], gateway_prefix: str = "gw") -> None:
        self.config = config
        self.source = source
        self.prefix = gateway_prefix
        self.procs: list[asyncio.subprocess.Process] = []
        self._reserved: list[socket.socket] = []
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self.admin_port: int | None = None
        self.gateway_ids: list[str] = []
        self.peer_ports: list[int] = []  # private loopback ports, by worker index
        self.worker_admin_ports: list[int] = []
        self._admin: WorkerAdmin | None = None

    @overload
    def _reserve_port(self, host: str, port: int) -> int: ...
    @overload
    def _reserve_port(self, host: str, port: int | None) -> int | None: ...
    def _reserve_port(self, host: str, port: int | None) -> int | None:
        sock, port = _reserve(host, port)
        if sock is not None:
            self._reserved.append(sock)
        return port

    async def start(self, ready_timeout: float = 30.0) -> None:
        cfg = self.config
        n = cfg.workers
        self.gateway_ids = [f"{self.prefix}-{os.getpid()}-{i}" for i in range(n)]
        try:
            self.http_port = self._reserve_port(cfg.host, cfg.http_port)
            self.grpc_port = self._reserve_port(cfg.host, cfg.grpc_port)
            self.peer_ports = [self._reserve_port(LOOPBACK, 0) for _ in range(n)]
            if cfg.admin_port is not None:
                self.worker_admin_ports = [self._reserve_port(LOOPBACK, 0) for _ in range(n)]
                await self._serve_admin(cfg)
            await self._start_workers(cfg, ready_timeout)
        except BaseException:
            await self.stop(0)
            raise

    async def _serve_admin(self, cfg: GatewayConfig) -> None:
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.create_server((cfg.host, cfg.admin_port), family=family)
        self.admin_port = sock.getsockname()[1]
        self._admin = WorkerAdmin(
            lambda: [
                (gid, port, i < len(self.procs) and self.procs[i].returncode is None)
                for i, (gid, port) in enumerate(zip(self.gateway_ids, self.worker_admin_ports, strict=False))
            ]
        )
        await self._admin.start(sock)

    async def _start_workers(self, cfg: GatewayConfig, ready_timeout: float) -> None:
        for i in range(cfg.workers):
            overrides: dict[str, Any] = {"http_port": self.http_port, "grpc_port": self.grpc_port}
            if self._admin:
                overrides.update(admin_port=self.worker_admin_ports[i], admin_host=LOOPBACK)
            worker_cfg = dataclasses.replace(cfg, **overrides)
            spec = {
                "config": dataclasses.asdict(worker_cfg),
                "source": self.source,
                "gateway_id": self.gateway_ids[i],
                "index": i,
                "peers": self.peer_ports,
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fngate.proxy.workers",
                json.dumps(spec),
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
            )
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None  # started with stdout=PIPE
            line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout)
            if not line.startswith(b"ready"):
                raise RuntimeError(f"gateway worker failed to start: {line!r}")

    async def stop(self, grace: float = 10.0) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), grace + 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.procs.clear()
        if self._admin is not None:
            await self._admin.aclose()
            self._admin = None
        for s in self._reserved:
            s.close()
        self._reserved.clear()


async def _worker(spec: dict[str, Any]) -> None:
    from fngate.proxy.routing import SnapshotHolder
    from fngate.proxy.server import Gateway
    from fngate.proxy.siblings import Siblings
    from fngate.proxy.sources import ControlHttpSource, RedisSource

    cfg = GatewayConfig(**spec["config"])
    gid = spec["gateway_id"]
    holder = SnapshotHolder()
    src = spec["source"]
    source = RedisSource(src["redis"], holder, gid) if "redis" in src else ControlHttpSource(src["api"], src["key"], holder, gid)
    source.start()
    gateway = Gateway(cfg, holder, gid, source.send_load, Siblings(spec["index"], spec["peers"]))
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    def orphaned() -> None:  # the parent died without stopping us (SIGKILL): stop too
        if os.getppid() != parent:
            stop.set()
        else:
            loop.call_later(1.0, orphaned)

    loop.call_later(1.0, orphaned)
    print("ready", os.getpid(), flush=True)
    await stop.wait()
    await gateway.stop(cfg.grace)
    await source.aclose()


def main() -> None:
    import uvloop

    uvloop.run(_worker(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
