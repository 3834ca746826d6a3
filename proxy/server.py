"""The Gateway: listeners (invocation, gRPC, admin), the shared hot-path parts
(limiter, upstream pool, the call engine and its handlers, metrics), the LoadReporter,
graceful stop. The composition root of the data plane: the one place that wires the
drivers (through ClientConnection) to the handlers.

    gw = Gateway(GatewayConfig(http_port=0, ...), holder, "gw-1", load_sink)
    await gw.start(); gw.http_port ...; await gw.stop(grace=5)
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import web

from fngate.proxy.calls.call import Engine
from fngate.proxy.calls.dispatch import Invocations
from fngate.proxy.calls.exchange import OpenConnections
from fngate.proxy.calls.metrics import Metrics
from fngate.proxy.calls.pexec import TRACKING_SECONDS, Pexec
from fngate.proxy.calls.pexec_results import SharedResults
from fngate.proxy.calls.siblings import PeerHandler, Siblings
from fngate.proxy.config import LOOPBACK, GatewayConfig
from fngate.proxy.drivers.sniff import ClientConnection
from fngate.proxy.instances.pool import H1Pool
from fngate.proxy.llm.gateway import LlmGateway
from fngate.proxy.ops.admin import make_admin_app
from fngate.proxy.ops.build_mode import describe_build
from fngate.proxy.ops.observability import Observability
from fngate.proxy.routing.limiter import Limiter
from fngate.proxy.routing.snapshot import LoadReport, SnapshotHolder

if TYPE_CHECKING:
    from fngate.proxy.grpc.relay import GrpcHandler
    from fngate.proxy.grpc.sessions import GrpcSessions
    from fngate.proxy.routing.rate_lease import RedisLeaser

log = logging.getLogger(__name__)


def _listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def raise_open_files_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit and return it. Every proxied
    stream holds two descriptors (client and instance), and many hosts start processes
    at a soft limit of 1024, which would cap a gateway near 500 open streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


# glibc's defaults give memory back to the kernel as soon as 128 KiB lie free at the
# top of the heap, and grow it by as little. Relaying large bodies allocates and frees
# buffers of hundreds of KiB all the time, so the heap shrank and grew (brk and page
# faults) on every response: 1 MiB responses ran at 500-1,000 req/s, and at ~1,850
# with these two settings. The gateway keeps at most 32 MiB free before trimming.
_TRIM_THRESHOLD = 32 * 1024 * 1024
_TOP_PAD = 8 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2  # mallopt(3) parameter numbers


def tune_malloc() -> bool:
    """Set glibc's heap trim threshold and top pad (see above), unless the operator set
    them through MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_; False where there is no glibc."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") or os.environ.get("MALLOC_TOP_PAD_"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(libc.mallopt(_M_TOP_PAD, _TOP_PAD))
    except (OSError, AttributeError):
        return False


class InFlight(NamedTuple):
    requests: int  # HTTP requests other than SSE streams and gRPC calls
    streams: int  # SSE responses open
    grpc_calls: int

    @property
    def total(self) -> int:
        return self.requests + self.streams + self.grpc_calls


class Gateway:
    """`siblings`: the other workers of a `--workers N` gateway (proxy/ops/workers.py); this
    worker then also listens on its private loopback port for their pexec status polls."""

    def __init__(
        self,
        config: GatewayConfig,
        holder: SnapshotHolder,
        gateway_id: str,
        load_sink: Callable[[LoadReport], object] | None = None,
        siblings: Siblings | None = None,
    ) -> None:
        self.config = config
        self.holder = holder
        self.gateway_id = gateway_id
        self.load_sink = load_sink
        self.metrics = Metrics()
        self.limiter = Limiter(holder, config.max_slots_per_connection)
        self.pool = H1Pool(config.upstream_keepalive, config.upstream_pool_size, config.connect_timeout)
        self.engine = Engine(config, holder, self.limiter, self.pool, self.metrics)
        self.rate_leaser = self._rate_leaser()
        self.siblings = siblings
        self.pexec_results = SharedResults.from_url(config.pexec_results_redis, TRACKING_SECONDS) if config.pexec_results_redis else None
        self.pexec = Pexec(self.engine, siblings, self.pexec_results)
        self.llm = LlmGateway(self.engine, config.llm_uri_allowlist)
        self.metrics.extra.append(self.llm.render_metrics)
        self.handler = Invocations(self.engine, self.pexec, self.llm)
        self.connections = OpenConnections()  # every listener's client connections, for a graceful stop
        self.grpc = self._grpc_handler()
        self.observability = Observability.from_config(config)  # None: no tracing, no access log
        if self.observability is not None:
            self.engine.observers = self.grpc.observers = self.observability.observers
        self.grpc_sessions = self._grpc_sessions()
        self.serving = False
        self._stop_now = asyncio.Event()  # set by stop_now(): a stop in progress drains no longer
        self._servers: list[asyncio.AbstractServer] = []
        self._admin: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ports: dict[str, int | None] = {"http": None, "grpc": None, "admin": None}

    def _rate_leaser(self) -> RedisLeaser | None:
        """With a Redis URL, rate-limit buckets lease from Redis (one limit for all processes)."""
        url = self.config.rate_limit_redis
        if not url:
            return None
        import redis.asyncio as aioredis

        from fngate.proxy.routing.rate_lease import RedisLeaser

        leaser = RedisLeaser(aioredis.from_url(url))
        self.engine.rate_limits.use_buckets(leaser.bucket)
        return leaser

    def _grpc_handler(self) -> GrpcHandler:
        """gRPC streams on HTTP/2 go to the relay (see proxy/drivers/h2.py), which shares the key
        check, the instance slots and the request metrics with the HTTP calls (proxy/calls/call.py)."""
        from fngate.proxy.grpc.relay import GrpcHandler
        from fngate.proxy.instances.h2 import H2UpstreamPool

        cfg = self.config
        pool = H2UpstreamPool(connect_timeout=cfg.connect_timeout, idle_timeout=cfg.upstream_keepalive)
        return GrpcHandler(
            self.holder,
            self.limiter,
            self.engine.keys,
            pool,
            request_metrics=self.metrics,
            queue_timeout=float(cfg.default_poll_seconds),
            body_rate=cfg,
            rate_limits=self.engine.rate_limits,
            deadlines=self.engine.deadlines,
        )

    def _grpc_sessions(self) -> GrpcSessions | None:
        """The gRPC port's sessions (proxy/grpc/sessions.py), unless configured off."""
        from fngate.proxy.grpc.sessions import GrpcSessions

        cfg = self.config
        if not cfg.grpc_sessions:
            return None
        return GrpcSessions(
            self.limiter,
            self.grpc.metrics,
            start_timeout=cfg.grpc_session_start_timeout,
            idle_timeout=cfg.grpc_session_idle_timeout,
            reconnect_grace=cfg.grpc_session_reconnect_grace,
            max_sessions=cfg.grpc_max_sessions,
        )

    # -- ports ----------------------------------------------------------------------------
    @property
    def http_port(self) -> int | None:
        return self._ports["http"]

    @property
    def grpc_port(self) -> int | None:
        return self._ports["grpc"]

    @property
    def admin_port(self) -> int | None:
        return self._ports["admin"]

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        raise_open_files_limit()
        tune_malloc()
        if self.observability is not None:
            self.observability.start()
        reuse = cfg.workers > 1
        tls = None
        if cfg.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            tls.set_alpn_protocols(["h2", "http/1.1"])
        sock = _listen_socket(cfg.host, cfg.http_port, reuse)
        handler, conns, grpc = self.handler, self.connections, self.grpc
        self._servers.append(
            await loop.create_server(lambda: ClientConnection(cfg, handler, conns, grpc), sock=sock, ssl=tls, backlog=cfg.backlog)
        )
        self._ports["http"] = sock.getsockname()[1]
        if cfg.grpc_port is not None:
            from fngate.proxy.grpc.cors import PreflightFirst
            from fngate.proxy.grpc.sessions import SessionPort

            gsock = _listen_socket(cfg.host, cfg.grpc_port, reuse)
            ghandler = PreflightFirst(handler)  # CORS preflights as NVCF's gRPC port answers them
            gport = grpc if self.grpc_sessions is None else SessionPort(grpc, self.grpc_sessions)
            self._servers.append(
                await loop.create_server(
                    # HTTP/1.1 too, as NVCF's gRPC port (h2c handler): a browser's preflight arrives so
                    lambda: ClientConnection(cfg, ghandler, conns, gport),
                    sock=gsock,
                    ssl=tls,
                    backlog=cfg.backlog,
                )
            )
            self._ports["grpc"] = gsock.getsockname()[1]
        if self.siblings is not None:
            peer = PeerHandler(self.pexec)
            psock = _listen_socket(LOOPBACK, self.siblings.port, True)
            self._servers.append(await loop.create_server(lambda: ClientConnection(cfg, peer, conns, grpc), sock=psock))
        if cfg.admin_port is not None:
            self._admin = web.AppRunner(make_admin_app(self), access_log=None, handle_signals=False)
            await self._admin.setup()
            asock = _listen_socket(cfg.admin_host or cfg.host, cfg.admin_port, reuse)
            site = web.SockSite(self._admin, asock)
            await site.start()
            self._ports["admin"] = asock.getsockname()[1]
        self._tasks.append(loop.create_task(self.limiter.watch()))
        if self.rate_leaser is not None:
            self.rate_leaser.start()
        if self.load_sink is not None:
            self._tasks.append(loop.create_task(self._report_loop()))
        self.serving = True
        log.info("gateway %s serving, data plane %s", self.gateway_id, describe_build())

    def pending(self) -> InFlight:
        """What a stop waits for: HTTP requests, SSE streams and gRPC calls being served
        (metrics.in_flight counts all three)."""
        streams = self.metrics.sse_open
        calls = len(self.grpc.calls) if self.grpc is not None else 0
        return InFlight(max(self.metrics.in_flight - streams - calls, 0), streams, calls)

    def stop_now(self) -> None:
        """Cut short the drain of a `stop` in progress (or the next one): close at once."""
        self._stop_now.set()

    async def stop(self, grace: float = 10.0) -> InFlight:
        """Stop accepting, let in-flight requests finish for up to `grace` seconds (or until
        `stop_now`), close. Returns what was still in flight when the drain ended (cut)."""
        self.serving = False
        for s in self._servers:
            s.close()
        for conn in self.connections:
            conn.shutdown()
        await self._drain(grace)
        cut = self.pending()
        if self.grpc is not None and self.grpc.calls:
            # calls still running past the grace: UNAVAILABLE to their clients and a reset to
            # their instances, written before the connections close
            self.grpc.abort_all()
            await asyncio.sleep(0)
        for conn in self.connections:  # the grace is over
            conn.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.load_sink is not None:
            await self._report_once()  # the final state, so the control plane sees zero
        if self.grpc_sessions is not None:
            self.grpc_sessions.close()  # their slots
        if self.grpc is not None:
            await self.grpc.aclose()
        if self.rate_leaser is not None:
            await self.rate_leaser.aclose()
        self.pool.close()
        self.engine.close()
        self.pexec.close()
        if self.pexec_results is not None:
            await self.pexec_results.aclose()
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        if self.observability is not None:
            await self.observability.aclose()
        for s in self._servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 1.0)
            except (TimeoutError, Exception):
                pass
        self._servers.clear()
        return cut

    async def _drain(self, grace: float) -> None:
        """Wait until nothing is in flight (the last invocation to end calls
        metrics.on_drained), `stop_now`, or the end of the grace, whichever comes first."""
        metrics = self.metrics
        if not metrics.in_flight or self._stop_now.is_set():
            return
        drained = asyncio.Event()
        metrics.on_drained = drained.set
        waits = [asyncio.ensure_future(drained.wait()), asyncio.ensure_future(self._stop_now.wait())]
        try:
            await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            metrics.on_drained = None
            for w in waits:
                w.cancel()

    # -- load reports ---------------------------------------------------------------------
    def load_report(self) -> LoadReport:
        return LoadReport(self.gateway_id, time.time(), self.limiter.version_loads(self.holder.table))

    async def _report_once(self) -> None:
        try:
            sink = self.load_sink
            assert sink is not None  # reports run only with a sink
            result = sink(self.load_report())
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a failed report is retried on the next tick
            log.debug("load report failed: %s", exc)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.load_report_interval)
            await self._report_once()
