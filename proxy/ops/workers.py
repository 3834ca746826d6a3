"""`--workers N > 1`: N gateway processes sharing the listening ports with SO_REUSEPORT.

The parent picks concrete ports first (binding port 0 with SO_REUSEPORT and keeping
that socket, unlistened, so the port stays reserved), then starts each worker as
`python -m fngate.proxy.ops.workers '<json>'`. A worker runs uvloop, gets its routing snapshot
from a RoutingSource (ControlHttpSource, or RedisSource when the store is Redis),
sends its LoadReports through the same source, and prints one `ready` line.

Each worker also gets two private loopback ports, reserved the same way: one for its
siblings' pexec status polls (proxy/calls/siblings.py), one for its admin app. The parent
itself serves the public admin port for all workers (proxy/ops/worker_admin.py).

The parent supervises its workers: one that exits while the pool is not stopping is
started again with the same index, ports and gateway id (so its load reports replace
the dead one's, and pexec ids it hands out still name it), after a pause that doubles
while it keeps dying young (RESTART_DELAY up to RESTART_DELAY_MAX). The others keep
serving meanwhile: SO_REUSEPORT sends new connections only to live listeners. The
pexec results the dead worker held are lost with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from typing import Any, overload

from fngate.proxy.config import LOOPBACK, GatewayConfig
from fngate.proxy.ops.worker_admin import WorkerAdmin

log = logging.getLogger(__name__)

RESTART_DELAY = 0.2  # seconds before the first restart of a worker that died
RESTART_DELAY_MAX = 5.0
FIRST_SNAPSHOT_WAIT = 10.0  # seconds a starting worker waits for its routing before listening anyway
STABLE_AFTER = 30.0  # a worker that ran this long before dying is restarted at once again


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
        self.restarts: list[int] = []  # by worker index
        self._admin: WorkerAdmin | None = None
        self._stopping = False
        self._supervisors: list[asyncio.Task[None]] = []
        self._ready_timeout = 30.0

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
            ],
            lambda: list(zip(self.gateway_ids, self.restarts, strict=False)),
        )
        await self._admin.start(sock)

    async def _start_workers(self, cfg: GatewayConfig, ready_timeout: float) -> None:
        self._ready_timeout = ready_timeout
        self.restarts = [0] * cfg.workers
        self.procs = []
        for i in range(cfg.workers):
            self.procs.append(await self._spawn(i))  # one by one: stop() ends those started if one fails
        for proc in self.procs:
            await self._until_ready(proc)
        loop = asyncio.get_running_loop()
        self._supervisors = [loop.create_task(self._supervise(i)) for i in range(cfg.workers)]

    async def _spawn(self, i: int) -> asyncio.subprocess.Process:
        cfg = self.config
        overrides: dict[str, Any] = {"http_port": self.http_port, "grpc_port": self.grpc_port}
        if self._admin:
            overrides.update(admin_port=self.worker_admin_ports[i], admin_host=LOOPBACK)
        spec = {
            "config": dataclasses.asdict(dataclasses.replace(cfg, **overrides)),
            "source": self.source,
            "gateway_id": self.gateway_ids[i],
            "index": i,
            "peers": self.peer_ports,
            "parent": os.getpid(),  # the worker stops when it is no longer this process's child
        }
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fngate.proxy.ops.workers",
            json.dumps(spec),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )

    async def _until_ready(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        line = await asyncio.wait_for(proc.stdout.readline(), self._ready_timeout)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"gateway worker failed to start: {line!r}")

    async def _supervise(self, i: int) -> None:
        """Start worker i again whenever it exits while the pool is not stopping."""
        delay = RESTART_DELAY
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            code = await self.procs[i].wait()
            if self._stopping:
                return
            lived = loop.time() - started
            delay = RESTART_DELAY if lived >= STABLE_AFTER else min(delay * 2, RESTART_DELAY_MAX)
            log.warning("gateway worker %s exited with %s after %.1fs; restarting it", self.gateway_ids[i], code, lived)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts[i] += 1
            started = loop.time()
            proc = self.procs[i] = await self._spawn(i)
            try:
                await self._until_ready(proc)
            except (RuntimeError, TimeoutError) as exc:
                log.warning("gateway worker %s did not come back: %s", self.gateway_ids[i], exc)
                if proc.returncode is None:
                    proc.kill()  # the loop waits for it and tries again, later

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        for task in self._supervisors:
            task.cancel()
        self._supervisors.clear()
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
    from fngate.proxy.calls.siblings import Siblings
    from fngate.proxy.routing.snapshot import SnapshotHolder
    from fngate.proxy.routing.sources import ControlHttpSource, RedisSource
    from fngate.proxy.server import Gateway

    # the parent's pid from the spec, not getppid() later: a parent killed while this worker
    # starts would leave it adopted by init already, and it would never notice
    parent = int(spec.get("parent") or os.getppid())
    cfg = GatewayConfig(**spec["config"])
    gid = spec["gateway_id"]
    holder = SnapshotHolder()
    src = spec["source"]
    source = RedisSource(src["redis"], holder, gid) if "redis" in src else ControlHttpSource(src["api"], src["key"], holder, gid)
    source.start()
    # listen only once the routing is known: a worker (re)started under traffic would
    # otherwise answer 401/404 to the requests the kernel hands it before its first snapshot
    await holder.wait_newer_than(0, FIRST_SNAPSHOT_WAIT)
    gateway = Gateway(cfg, holder, gid, source.send_load, Siblings(spec["index"], spec["peers"]))
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def orphaned() -> None:  # the parent died without stopping us (SIGKILL): stop too
        if os.getppid() != parent:
            stop.set()
        else:
            loop.call_later(1.0, orphaned)

    orphaned()
    print("ready", os.getpid(), flush=True)
    await stop.wait()
    await gateway.stop(cfg.grace)
    await source.aclose()


def main() -> None:
    import uvloop

    uvloop.run(_worker(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
