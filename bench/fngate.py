"""fngate's gateway as a system under test: a static routing table, one process per run.

`GatewayProcess` starts `python -m fngate.bench.fngate` (this module's `main`), which builds
the gateway (`proxy.server.Gateway`) on free ports, publishes the table into its
SnapshotHolder and writes the bound ports to a ready file; with `--workers N > 1` it
starts the gateway's own WorkerPool (proxy.workers, SO_REUSEPORT) fed from a private
redis-server holding the table, as `fngate serve --workers N` does. No control plane runs: the
benchmark measures the data plane with every per-request feature on (auth against the
table's key digests, routing, per-instance limits, metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fngate.bench.procs import PYTHON, Proc, free_port, wait_port
from fngate.bench.runner import say
from fngate.proxy.config import LOOPBACK

BENCH_KEY = "nvapi-bench-" + "k" * 40
INVOKE_SCOPES = ("invoke_function", "list_functions", "queue_details")


@dataclass(frozen=True)
class Upstream:
    """One function for the table: a name, its instance address and protocol."""

    name: str
    host: str
    port: int
    protocol: str = "http1"  # "http1" or "h2c" (gRPC)


def gateway_available() -> str | None:
    """None when the gateway can be imported, else why not (the fngate rows are skipped)."""
    try:
        import fngate.proxy.config
        import fngate.proxy.server  # noqa: F401
    except ImportError as e:
        return f"the gateway is not importable ({e})"
    return None


def function_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fngate-bench/{name}"))


def build_table(upstreams: list[Upstream], max_concurrency: int = 4096):
    from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, RoutingTable, VersionRoute, key_digest

    routes = []
    for u in upstreams:
        fid = function_id(u.name)
        grpc = u.protocol == "h2c"
        routes.append(
            VersionRoute(
                function_id=fid,
                version_id=function_id(u.name + "/v1"),
                name=u.name,
                status="ACTIVE",
                inference_url="/grpc" if grpc else "/",
                inference_port=u.port,
                grpc=grpc,
                max_concurrency=max_concurrency,
                endpoints=(Endpoint(f"{u.name}-0", u.host, u.port),),
            )
        )
    grant = KeyGrant(key_id="bench", scopes=frozenset(INVOKE_SCOPES))
    return RoutingTable.build(1, routes, [(key_digest(BENCH_KEY), grant)])


def invoke_headers(name: str) -> dict[str, str]:
    """Request headers that route to function `name` and authenticate (HTTP and gRPC)."""
    return {"function-id": function_id(name), "authorization": f"Bearer {BENCH_KEY}"}


class GatewayProcess:
    """The gateway in its own process, pinned like any other system under test."""

    def __init__(
        self,
        upstreams: list[Upstream],
        cpus: str | None,
        work: Path,
        log_dir: Path,
        workers: int = 1,
        max_concurrency: int = 4096,
        observe: list[str] | None = None,
    ):
        """`observe`: tracing / access log options (`--otlp-endpoint URL`, `--access-log PATH`)."""
        self.name = f"fngate-{workers}w" + ("-observed" if observe else "")
        table_path = work / f"{self.name}-table.json"
        table_path.write_bytes(build_table(upstreams, max_concurrency).to_json())
        ready = work / f"{self.name}-ready.json"
        ready.unlink(missing_ok=True)
        cmd = [PYTHON, "-m", "fngate.bench.fngate", "--table", str(table_path), "--ready-file", str(ready), "--workers", str(workers)]
        cmd += observe or []
        self.redis: Proc | None = None
        if workers > 1:  # worker processes read the snapshot from Redis, as with `fngate serve --workers N`
            redis_port = free_port()
            self.redis = Proc(
                f"{self.name}-redis",
                [_redis_server(), "--port", str(redis_port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"],
                cpus,
                log_dir,
            )
            wait_port(redis_port, proc=self.redis)
            cmd += ["--redis", f"redis://{LOOPBACK}:{redis_port}/0"]
        self.proc = Proc(self.name, cmd, cpus, log_dir)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.proc.output_tail()}")
            time.sleep(0.05)
        ports = json.loads(ready.read_text())
        self.port, self.grpc_port = ports["http_port"], ports["grpc_port"]
        self.build = ports["build"]  # the data plane it runs: compiled, pure or mixed (proxy/ops/build_mode.py)
        say(f"{self.name}: data plane {self.build}")
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        self.proc.stop()
        if self.redis is not None:
            self.redis.stop()


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("redis-server is not installed (needed for --workers 2): apt-get install redis-server")
    return path


def _bound_port(gateway, kind: str) -> int:
    for attr in (f"{kind}_port", f"bound_{kind}_port"):
        value = getattr(gateway, attr, None)
        if isinstance(value, int) and value:
            return value
    raise RuntimeError(f"the gateway exposes no bound {kind} port")


async def _start_workers(config, table_json: bytes, redis_url: str):
    """N worker processes (proxy.workers) fed from Redis, where the table is published first."""
    import redis.asyncio as aioredis

    from fngate.proxy.ops.workers import WorkerPool
    from fngate.proxy.routing.snapshot import ROUTING_KEY

    client = aioredis.from_url(redis_url)
    await client.set(ROUTING_KEY, table_json)
    await client.aclose()
    pool = WorkerPool(config, {"redis": redis_url}, "bench-gw")
    await pool.start()
    await asyncio.sleep(1.0)  # each worker reads the snapshot right after it subscribes
    return pool


async def _serve(table_path: Path, ready_file: Path, workers: int, redis_url: str | None, observe: dict[str, str | None]) -> None:
    from fngate.proxy.config import GatewayConfig
    from fngate.proxy.routing.snapshot import RoutingTable, SnapshotHolder
    from fngate.proxy.server import Gateway

    config = GatewayConfig(
        host=LOOPBACK,
        http_port=0,
        grpc_port=0,
        admin_port=0,
        workers=workers,
        otlp_endpoint=observe["otlp_endpoint"],
        access_log=observe["access_log"],
    )
    table = table_path.read_bytes()  # noqa: ASYNC240 once, before anything serves
    if workers > 1:
        assert redis_url is not None  # workers read the table from Redis
        gateway = await _start_workers(config, table, redis_url)
    else:
        holder = SnapshotHolder()
        holder.publish(RoutingTable.from_json(table))
        gateway = Gateway(config, holder, "bench-gateway", None)
        await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from fngate.proxy.ops.build_mode import loaded_build

    ports = {"http_port": _bound_port(gateway, "http"), "grpc_port": _bound_port(gateway, "grpc"), "build": loaded_build()[0]}
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.rename(ready_file)
    await stop.wait()
    await gateway.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fngate.bench.fngate", description="the gateway with a static routing table")
    parser.add_argument("--table", type=Path, required=True, help="RoutingTable JSON")
    parser.add_argument("--ready-file", type=Path, required=True, help="where to write the bound ports")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", help="Redis URL the worker processes read the table from (--workers > 1)")
    parser.add_argument("--otlp-endpoint", help="trace every request (ratio 1) and export to this OTLP/HTTP receiver")
    parser.add_argument("--access-log", help="write the JSON access log here")
    args = parser.parse_args()
    observe = {"otlp_endpoint": args.otlp_endpoint, "access_log": args.access_log}
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.table, args.ready_file, args.workers, args.redis, observe))
    else:
        uvloop.run(_serve(args.table, args.ready_file, args.workers, args.redis, observe))


if __name__ == "__main__":
    main()
