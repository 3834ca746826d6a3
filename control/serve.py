"""`fngate serve`: the composition root that wires the control plane together.

Each step below starts one part and registers how to stop it; they run in order
(store -> API -> backends -> control loops -> gateway) and stop in reverse. A step
reads what earlier steps left on the Server and adds to `self.ready`, the JSON
written to --ready-file once everything listens.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web
from redis.exceptions import RedisError

from fngate.backends.catalog import ImageCatalog
from fngate.backends.factory import build_backends
from fngate.backends.inventory import Inventory
from fngate.proxy.config import LOOPBACK
from fngate.proxy.routing.snapshot import LoadReport, RoutingWire, SnapshotHolder
from fngate.proxy.server import Gateway, InFlight

from . import keys
from .api import console, make_app
from .api.context import CONTEXT
from .config import ConfigError, ServeConfig
from .counters import ControlCounters
from .loadboard import LoadBoard
from .store.base import StateStore


class Server:
    def __init__(self, cfg: ServeConfig, out: TextIO = sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.stack = AsyncExitStack()
        self.ready: dict[str, Any] = {}
        self.store: StateStore | None = None
        self.admin_key = ""
        self.loadboard = LoadBoard()
        self.counters = ControlCounters()  # the control loops', across leaderships (API /metrics)
        self.inventory = Inventory.from_config(cfg.section("inventory"))
        self.backend_name = "local"
        self.backends: dict[str, Any] = {}  # name -> Backend, from the config file (start_backends)
        self.routing_holder = SnapshotHolder()  # the newest routing table, for the in-process gateway
        self.routing_wire = RoutingWire()  # its wire forms, for gateway workers in other processes
        self.redis: Any = None  # a redis.asyncio client when the store is Redis
        self.leadership: Any = None  # control.leader.Leadership when the store is Redis
        self._fenced: Any = None
        self._loops: list[Callable[[], Awaitable[None]]] = []  # closers of the running control loops
        self.reconciler: Any = None  # the running Reconciler, while this replica leads (or on SQLite)
        self._hand_over: asyncio.Task[None] | None = None  # local instances a deposed leader hands over
        self._stepping_down: asyncio.Task[None] | None = None  # a stopping leader handing over (stop())
        self._stop_ends: float | None = None  # when a stop's hand-over must end (monotonic), while stopping
        self._forced = False  # a second signal: nothing waits for a hand-over any more
        self.gateway: Any = None  # a Gateway (one worker) or a WorkerPool, from start_gateway
        self.publisher: Any = None  # the RoutingPublisher while this process runs the control loops

    @property
    def open_store(self) -> StateStore:
        """The store, for the steps after start_store."""
        if self.store is None:
            raise RuntimeError("start_store has not run")
        return self.store

    # -- wiring steps, in start order ------------------------------------------

    async def start_store(self) -> None:
        from . import records
        from .secrets_box import SecretBox, SecretsKeyError, private_dir
        from .store.sealed import SealedStore

        cfg = self.cfg
        private_dir(cfg.data_dir)  # the database, admin.key and secrets.key: owner only
        try:
            box = SecretBox.load(cfg.data_dir)
        except SecretsKeyError as exc:
            raise ConfigError(f"secrets key: {exc}") from None
        inner: StateStore
        if cfg.store_is_redis:
            from .store.redis import RedisStore

            inner = await RedisStore.open(cfg.store)
        else:
            from .store.sqlite import SqliteStore

            inner = await SqliteStore.open(cfg.data_dir / "fngate.db")
        self.secrets_box = box
        sealed = SealedStore(inner, box, records.SEALED_KINDS)
        self.store = sealed
        self.stack.push_async_callback(sealed.aclose)
        await sealed.seal_plaintext()  # secrets a release before encryption stored in the clear

    async def start_backends(self) -> None:
        cfg = self.cfg
        try:
            catalog = ImageCatalog(cfg.section("catalog"))
            self.backends = build_backends(cfg.sections.get("backends"), data_dir=cfg.data_dir, inventory=self.inventory, catalog=catalog)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"config file, backends/catalog: {exc}") from None

        async def close_backends() -> None:
            for backend in self.backends.values():
                await backend.aclose()

        self.stack.push_async_callback(close_backends)

    async def start_api(self) -> None:
        cfg = self.cfg
        self.admin_key, generated = keys.load_or_create_admin_key(cfg.data_dir)
        app = make_app(
            self.open_store,
            admin_key=self.admin_key,
            loadboard=self.loadboard,
            capacity=self.capacity,
            nca_id=cfg.nca_id,
            max_body=cfg.max_body,
            backends=frozenset(self.backends),
            preflight=self.preflight,
        )
        app[CONTEXT].counters = self.counters
        from .api.assets import AssetSettings
        from .api.assets import enable as enable_assets

        try:
            asset_settings = AssetSettings.from_config(cfg.data_dir, self.secrets_box.derive("asset-urls"), cfg.section("assets"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"config file, assets: {exc}") from None
        enable_assets(app, asset_settings)
        app[CONTEXT].routing_caught_up = self.routing_caught_up  # read-your-writes (control/api/routing_sync.py)
        from .internal_api import mount_internal_api

        mount_internal_api(app, self.routing_holder, self.routing_wire, self.loadboard, self.admin_key)
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
        self.console = app[console.LINKS]
        self.console.stats.ready_counts = self.ready_instances
        board = self.loadboard
        self.console.stats.in_flight_counts = lambda: {vid: board.version_load(vid).in_flight for vid in board.version_ids()}
        if generated:
            self._say(f"fngate: generated the admin key (saved to {cfg.data_dir / keys.ADMIN_KEY_FILE}): {self.admin_key}")

    async def ready_instances(self) -> dict[str, int]:
        """version id -> instances the reconciler saw READY (the console's chart)."""
        from . import records

        counts: dict[str, int] = {}
        for rec in await self.open_store.list(records.INSTANCES):
            instance = records.InstanceRecord.parse(rec.value)
            if instance.active and not instance.draining:
                counts[instance.version_id] = counts.get(instance.version_id, 0) + 1
        return counts

    def preflight(self, function: dict[str, Any], gpu_spec: dict[str, Any]) -> str | None:
        """Why the backend a GPU spec names (or the default one) can never run this function."""
        from .instance_spec import instance_spec
        from .records import FunctionVersion, GpuSpec

        name = gpu_spec.get("backend") or next(iter(self.backends), None)
        refusal = getattr(self.backends.get(name or ""), "refusal", None)  # an optional Backend extension
        return refusal(instance_spec(FunctionVersion.parse(function), GpuSpec.parse(gpu_spec))) if refusal is not None else None

    def capacity(self) -> list[dict[str, Any]]:
        """What deployments may ask for: every backend's instance types, tagged with its name."""
        if not self.backends:
            return [{**entry, "backend": self.backend_name} for entry in self.inventory.capacity()]
        return [{**entry, "backend": name} for name, b in self.backends.items() for entry in b.capacity()]

    async def start_control(self) -> None:
        """Reconciler, autoscaler and routing publisher. On SQLite they run here; on Redis,
        where several replicas may share the store, they run on the one replica that holds
        the leader lease (control/leader.py), writing through its fence, and every replica
        reads load reports from Redis."""
        from .leader import FencedStore, Leadership

        if self.cfg.store_is_redis:
            import redis.asyncio as aioredis

            from .internal_api import RedisLoadReader

            self.redis = aioredis.from_url(self.cfg.store)
            self.stack.push_async_callback(self.redis.aclose)
            reader = RedisLoadReader(self.redis, self.loadboard)
            reader.start()
            self.stack.push_async_callback(reader.aclose)
            knobs = self.cfg.section("leader")
            try:
                self.leadership = Leadership(
                    self.open_store,
                    f"{socket.gethostname()}-{os.getpid()}",
                    self._lead,
                    self._deposed,
                    ttl=float(knobs.get("ttl", 10.0)),
                    renew_every=float(knobs.get("renewInterval", 3.0)),
                )
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"config file, leader: {exc}") from None
            self._fenced = FencedStore(self.open_store, self.leadership)
            await self.leadership.step()  # the first replica up leads before it serves
            self.leadership.start()
            self.stack.push_async_callback(self._stop_leading)
        else:  # the one replica: a restart adopts what its shared backends still run, and drains go on
            await self._start_loops(self.open_store, inherit_grace=self._inherit_grace, sole=True)
            self.stack.push_async_callback(self._stop_loops)

    async def routing_caught_up(self) -> None:
        """The publisher's table reflects the store (when this process runs the publisher)."""
        publisher = self.publisher
        if publisher is not None:
            await publisher.caught_up()

    async def _lead(self, token: int) -> None:
        self._say(f"fngate: this replica leads the control loops (fencing token {token})")
        await self._cancel_hand_over()  # the new reconciler adopts what still runs here
        await self._start_loops(self._fenced, inherit_grace=self._inherit_grace)

    async def _deposed(self) -> None:
        """No longer the leader: stop the loops, then hand this replica's local instances over
        (control/handover.py) in the background; the new leader drains them first."""
        from .handover import HandOver

        reconciler = self.reconciler
        running = reconciler.running() if reconciler is not None else []
        await self._stop_loops()
        self.reconciler = None
        if self._stop_ends is not None:  # stopping: the hand-over ends with the stop's drain
            deadline = max(self._stop_ends - time.monotonic(), 0.0)
        else:
            deadline = self._drain_timeout + self._inherit_grace + 30
        hand_over = HandOver(self.open_store, self.backends, running, deadline=deadline)
        if hand_over.left and not self._forced:
            self._hand_over = asyncio.create_task(hand_over.run(), name="hand-over")

    def _others_serve(self) -> bool:
        """Whether gateways other than this replica's report load (other replicas run)."""
        gateway = self.gateway
        own = set(getattr(gateway, "gateway_ids", None) or [getattr(gateway, "gateway_id", "")])
        return bool(self.loadboard.gateway_ids() - own)

    def _begin_stepping_down(self) -> None:
        """At a stop: a leader whose local instances other replicas' gateways may be using
        hands the control loops over at once, while its own gateway drains, so that the
        new leader starts replacements and drains these instances before they stop."""
        from .handover import per_replica

        lead, reconciler = self.leadership, self.reconciler
        if lead is None or not lead.leading or reconciler is None:
            return
        if not any(per_replica(self.backends[name]) for name, _ in reconciler.running() if name in self.backends):
            return
        if not self._others_serve():
            self._say("fngate: no other replica's gateway reported load lately; local instances stop with this one")
            return
        self._stop_ends = time.monotonic() + self.cfg.drain_timeout
        self._stepping_down = asyncio.create_task(self._step_down_at_stop(), name="step-down")

    async def _step_down_at_stop(self) -> None:
        from .handover import successor

        lead = self.leadership
        await lead.aclose()  # gives the lease up; _deposed starts the hand-over
        task = self._hand_over
        if task is None:
            return
        within = min(lead.renew_every, lead.ttl / 4) + 1.0  # how often a follower looks at the lease, and a margin
        holder = await successor(self.open_store, lead.replica_id, within)
        if holder is None:
            self._say("fngate: no other replica took the control loops over; local instances stop with this one")
            await self._cancel_hand_over()
            return
        self._say(f"fngate: {holder} leads now; local instances stop once it has drained them")
        await asyncio.wait({task}, timeout=max((self._stop_ends or 0.0) - time.monotonic(), 0.0))

    async def _stop_leading(self) -> None:
        """At a stop, after the gateway drained: the hand-over begun with the stop ends (in time),
        then the lease is given up, if it was not yet, and what is left of a hand-over is cut."""
        task = self._stepping_down
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await self.leadership.aclose()
        await self._cancel_hand_over()

    async def _cancel_hand_over(self) -> None:
        task, self._hand_over = self._hand_over, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def _drain_timeout(self) -> float:
        from .reconciler import DRAIN_TIMEOUT

        return float(self.cfg.section("reconciler").get("drainTimeout", DRAIN_TIMEOUT)) or 3600.0

    @property
    def _inherit_grace(self) -> float:
        return float(self.cfg.section("reconciler").get("inheritGrace", 2.0))

    async def _start_loops(self, store: StateStore, inherit_grace: float = 0.0, sole: bool = False) -> None:
        from .autoscaler import Autoscaler, AutoscalerConfig
        from .publisher import RoutingPublisher
        from .reconciler import DRAIN_TIMEOUT, Reconciler

        knobs = self.cfg.section("reconciler")
        try:
            scaling = AutoscalerConfig.from_config(self.cfg.section("autoscaler"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"config file, autoscaler: {exc}") from None
        reconciler = Reconciler(
            store,
            self.backends,
            self.loadboard,
            resync_interval=float(knobs.get("resyncInterval", 5.0)),
            drain_timeout=float(knobs.get("drainTimeout", DRAIN_TIMEOUT)),
            error_ttl=float(knobs.get("errorTtl", 7 * 86400)),
            counters=self.counters,
            inherit_grace=inherit_grace,
            sole=sole,
        )
        publisher = RoutingPublisher(store, admin_key=self.admin_key, wire=self.routing_wire)
        publisher.add_sink(self.routing_holder.publish)
        if self.redis is not None:
            from fngate.proxy.routing.snapshot import ROUTING_KEY, RoutingTable

            previous = await self.redis.get(ROUTING_KEY)
            if previous:  # a previous leader's: never publish a version at or below it
                publisher.bump_past(RoutingTable.from_json(previous).version)
            publisher.add_redis_sink(self.redis)
        autoscaler = Autoscaler(store, self.loadboard, scaling)
        self.reconciler, self.publisher, self.autoscaler = reconciler, publisher, autoscaler
        await reconciler.start()  # first: it clears instance docs a previous run (or leader) left behind
        self._loops.append(reconciler.aclose)
        await publisher.start()
        self._loops.append(publisher.aclose)
        autoscaler.start()
        self._loops.append(autoscaler.aclose)

    async def _stop_loops(self) -> None:
        self.publisher = None
        loops, self._loops = self._loops, []
        for close in reversed(loops):
            await close()

    async def start_gateway(self) -> None:
        """The invocation gateway (proxy/): in this process, fed by routing_holder, for one
        worker; else --workers processes sharing the ports (SO_REUSEPORT) that read routing
        from the internal API, or from Redis when the store is Redis."""
        from fngate.proxy.config import GatewayConfig

        cfg = self.cfg
        gcfg = GatewayConfig(
            host=cfg.host,
            http_port=cfg.http_port,
            grpc_port=cfg.grpc_port,
            admin_port=cfg.admin_port,
            workers=cfg.workers,
            tls_cert=str(cfg.tls_cert) if cfg.tls_cert else None,
            tls_key=str(cfg.tls_key) if cfg.tls_key else None,
            grace=cfg.drain_timeout,
            rate_limit_redis=cfg.store if cfg.store_is_redis else None,  # one rate limit for every worker and replica
            llm_uri_allowlist=os.environ.get("FNGATE_LLM_URI_ALLOWLIST") == "1",  # NVCF's MODEL_URI_ALLOWLIST_ENABLED
            pexec_results_redis=cfg.store if cfg.store_is_redis else None,  # a pexec poll answered on any replica
            otlp_endpoint=cfg.otlp_endpoint,
            trace_sample_ratio=cfg.trace_sample_ratio,
            access_log=cfg.access_log,
            idle_timeout=cfg.stream_idle_timeout,  # no absolute limit on a stream: NVCF's 60 s write timeout is not ours
            # the pexec request directories, where the local instances (this machine) write
            output_dir=str((cfg.data_dir / "inf" / "response").absolute()),
            asset_dir=str((cfg.data_dir / "inf" / "inputAssets").absolute()),
            large_results_dir=str((cfg.data_dir / "large-results").absolute()),
            asset_lookup_url=self.ready.get("api_url"),  # NVCF-INPUT-ASSET-REFERENCES resolve through the API
            asset_lookup_key=self.admin_key,
        )
        if cfg.workers == 1:
            gateway_id = f"gw-{os.getpid()}"
            load_sink: Callable[[LoadReport], object] = self.loadboard.update
            if self.redis is not None:
                # other replicas lead, or will: routing comes through Redis as for any gateway
                # (the leader's publisher also hands it over directly), and load reports go
                # there too, so whichever replica leads sees them
                from fngate.proxy.routing.sources import RedisSource

                redis_source = RedisSource(cfg.store, self.routing_holder, gateway_id)
                redis_source.start()
                self.stack.push_async_callback(redis_source.aclose)

                def load_sink(report: LoadReport) -> Awaitable[None]:
                    self.loadboard.update(report)
                    return redis_source.send_load(report)

            gateway: Any = Gateway(gcfg, self.routing_holder, gateway_id, load_sink)
        else:
            from fngate.proxy.ops.workers import WorkerPool

            source = {"redis": cfg.store} if cfg.store_is_redis else {"api": self.ready["api_url"], "key": self.admin_key}
            gateway = WorkerPool(gcfg, source)
        await gateway.start()
        self.stack.push_async_callback(self.drain_gateway)  # stops first: instances serve until it has drained
        self.gateway = gateway
        self.ready.update(http_port=gateway.http_port, grpc_port=gateway.grpc_port, admin_port=gateway.admin_port)
        host = _url_host(cfg.host)
        metrics_url = f"http://{host}:{gateway.admin_port}/metrics" if gateway.admin_port is not None else None
        self._link_console(f"{'https' if cfg.tls_cert else 'http'}://{host}:{gateway.http_port}", metrics_url)
        self._say(
            f"fngate: invocation gateway on {host}:{gateway.http_port} (HTTP/1.1 + h2c), gRPC on "
            f"{host}:{gateway.grpc_port}, metrics on {host}:{gateway.admin_port}, {cfg.workers} worker(s)"
        )

    def _link_console(self, gateway_url: str, metrics_url: str | None) -> None:
        """The console reads the gateway's /metrics (the in-process gateway's, or the text the
        --workers parent joins from every worker) and relays invocations to its port."""
        import aiohttp

        links = self.console
        links.gateway_url = gateway_url
        if metrics_url is None:
            return
        url, scrape_timeout = metrics_url, aiohttp.ClientTimeout(total=3)

        async def fetch() -> str:
            async with links.client().get(url, timeout=scrape_timeout) as r:
                r.raise_for_status()
                return await r.text()

        links.stats.fetch = fetch

    def start_samples(self) -> None:
        """Unless --no-samples: register/deploy echo, sse and grpc-echo in the background, then
        print commands that invoke them (once they are ACTIVE)."""
        if not self.cfg.samples:
            return
        from .bootstrap import SampleBootstrap

        boot = SampleBootstrap(
            self.ready["api_url"],
            self.admin_key,
            self.capacity,
            self._say,
            http_port=int(self.ready.get("http_port") or self.cfg.http_port),
            grpc_port=int(self.ready.get("grpc_port") or self.cfg.grpc_port),
            host=_url_host(self.cfg.host),
            data_dir=str(self.cfg.data_dir),
        )

        async def run() -> None:
            try:
                await boot.run()
            except Exception as exc:
                self._say(f"fngate: could not deploy the sample functions: {exc}")

        task = asyncio.create_task(run(), name="sample-bootstrap")

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.stack.push_async_callback(cancel)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.start_store()
            await self.start_backends()
            await self.start_api()
            await self.start_control()
            await self.start_gateway()
        except BaseException:
            await self.stack.aclose()
            raise
        self._say(f"fngate: management API on {self.ready['api_url']} (OpenAPI at {self.ready['api_url']}/openapi.json)")
        self._say(f"fngate: store: {'redis' if self.cfg.store_is_redis else self.cfg.data_dir / 'fngate.db'}")
        if self.cfg.ready_file is not None:
            _write_private_json(self.cfg.ready_file, self.ready)
        self.start_samples()

    async def stop(self) -> None:
        self._begin_stepping_down()
        await self.stack.aclose()

    def stop_now(self) -> None:
        """A second signal: end the gateway's drain at once (the rest stops as usual)."""
        self._say("fngate: stopping at once")
        self._forced = True
        if self._hand_over is not None:  # local instances stop without waiting for another replica's drain
            self._hand_over.cancel()
        gateway = self.gateway
        if isinstance(gateway, Gateway):
            gateway.stop_now()
        elif gateway is not None:  # a WorkerPool: its workers drain on their own; end them
            for proc in gateway.procs:
                if proc.returncode is None:
                    proc.kill()

    async def drain_gateway(self) -> None:
        """Stop the gateway: no new connections, the requests in flight finish within
        --drain-timeout, saying what it waits for."""
        gateway = self.gateway
        reporter = asyncio.create_task(self._report_drain(), name="drain-report")
        try:
            left = await gateway.stop(self.cfg.drain_timeout)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        if isinstance(left, InFlight) and left.total:
            self._say(f"fngate: gateway closed with {_describe(left)} still in flight")
        else:
            self._say("fngate: gateway drained; stopping the control loops and instances")

    def pending(self) -> InFlight:
        """What the gateway still serves: its own counters in this process; with --workers,
        what the workers' load reports say is in flight."""
        gateway = self.gateway
        if isinstance(gateway, Gateway):
            return gateway.pending()
        return InFlight(self.loadboard.in_flight(), 0, 0)

    async def _report_drain(self) -> None:
        said = None
        deadline = time.monotonic() + self.cfg.drain_timeout
        while True:
            left = self.pending()
            if left != said:
                said = left
                if left.total:
                    self._say(f"fngate: draining {_describe(left)} ({max(deadline - time.monotonic(), 0):.0f} s left)")
                else:
                    self._say("fngate: nothing in flight")
            await asyncio.sleep(1.0)

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
        return LOOPBACK
    return f"[{host}]" if ":" in host else host


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)  # readers never see a half-written file


def _describe(left: InFlight) -> str:
    parts = [(left.requests, "request"), (left.streams, "stream"), (left.grpc_calls, "gRPC call")]
    return ", ".join(f"{n} {what}{'' if n == 1 else 's'}" for n, what in parts if n) or "nothing"


STOP_MARGIN = 12.0  # after the gateway's drain: the control loops, then instances (SIGTERM, then SIGKILL)
FORCED_STOP = 5.0  # after a second signal, what is left gets this long


async def run(cfg: ServeConfig) -> None:
    """Serve until SIGINT/SIGTERM, then stop every part in reverse order: the gateway
    first (it drains), the instances last. A second signal cuts the drain short."""
    server = Server(cfg)
    stop = asyncio.Event()
    forced = asyncio.Event()
    started = False

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
        elif started and not forced.is_set():
            forced.set()
            server.stop_now()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await server.start()
    started = True
    try:
        await stop.wait()
    finally:
        server._say(
            f"fngate: shutting down: no new connections; requests in flight get up to {cfg.drain_timeout:g} s "
            "(signal again to stop at once)"
        )
        stopping = asyncio.create_task(server.stop())
        cut_short = asyncio.create_task(forced.wait())
        bound = cfg.drain_timeout + STOP_MARGIN
        await asyncio.wait({stopping, cut_short}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done() and cut_short.done():
            await asyncio.wait({stopping}, timeout=FORCED_STOP)
        cut_short.cancel()
        if not stopping.done():  # asyncio.run cancels whatever is still running as we return
            server._say("fngate: some parts did not stop in time; exiting anyway")
        elif stopping.exception() is not None:
            server._say(f"fngate: error while stopping: {stopping.exception()!r}")


def main(cfg: ServeConfig) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(run(cfg))
    except (OSError, ssl.SSLError, RedisError, sqlite3.Error) as exc:  # a port in use, a bad cert, no Redis ...
        print(f"fngate: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
