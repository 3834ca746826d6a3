"""The throughput scenarios: HTTP/1.1 (small, 1 KB, 1 MB, the echo sample), h2c, gRPC, workers.

Each scenario starts its servers, measures direct / nginx (and the other anchors, the
featureless ceiling) / fngate with the same load generator and pinning (see
procs.layouts), stops everything, and returns Rows. When the gateway cannot be imported
yet, its rows are skipped and the reason is recorded.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from fngate.bench import h2_anchors, loadgen
from fngate.bench.fngate import GatewayProcess, Upstream, invoke_headers
from fngate.bench.grpc_load import GrpcEcho, grpc_body, probe
from fngate.bench.h2_anchors import Haproxy, Nghttpx
from fngate.bench.nginx import Nginx
from fngate.bench.procs import PYTHON, Layout, Proc, free_port, layouts, wait_port
from fngate.bench.report import ANCHOR, CEILING, DIRECT, FNGATE, NGINX, Row
from fngate.bench.runner import Settings, Target, alternate, fngate_unavailable, say
from fngate.proxy.config import LOOPBACK

HTTP1_SIZES = {"small": "/small", "1k": "/1k", "1m": "/1m"}
MINIMAL = "minimal Python proxy (no features)"
MINIMAL_H2 = "minimal Python h2 proxy (ngh2, no features)"
NGHTTPX = "nghttpx h2c→h1"
HAPROXY = "haproxy h2c→h1"
NGINX_GRPC = "nginx grpc_pass"
TRACED = "fngate (tracing on)"  # every request traced and exported over OTLP/HTTP, plus the access log (--tracing)


def _wrk(settings: Settings, connections: int | None = None) -> Callable[[Target, float], loadgen.Sample]:
    def load(t: Target, seconds: float) -> loadgen.Sample:
        return loadgen.wrk(
            t.url,
            connections=connections or settings.connections,
            duration=seconds,
            cpus=t.layout.load,
            work=settings.work,
            headers=t.headers,
        )

    return load


def _h2load(settings: Settings, clients: int, streams: int, body: bytes | None = None) -> Callable[[Target, float], loadgen.Sample]:
    def load(t: Target, seconds: float) -> loadgen.Sample:
        return loadgen.h2load(
            t.url,
            clients=clients,
            streams=streams,
            duration=seconds,
            cpus=t.layout.load,
            work=settings.work,
            headers=t.headers,
            body=body,
            warmup=min(1.0, settings.warmup),
        )

    return load


def _fngate_or_skip(settings: Settings, skipped: dict, key: str) -> bool:
    why = fngate_unavailable(settings)
    if why:
        skipped[key] = f"fngate rows skipped: {why}"
        say(skipped[key])
    return why is None


def http1(settings: Settings, skipped: dict, sizes: tuple[str, ...] = ("small", "1k", "1m")) -> list[Row]:
    """wrk -t1 -cN against the nginx upstream directly, through nginx, through fngate."""
    lay = layouts()
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        direct_up = Nginx.upstream(settings.work / "direct", lay["direct"].upstream, settings.logs)
        stack.callback(direct_up.stop)
        iso_up = Nginx.upstream(settings.work / "iso", lay["iso"].upstream, settings.logs)
        stack.callback(iso_up.stop)
        proxy = Nginx.proxy(settings.work, iso_up.port, lay["iso"].sut, settings.logs)
        stack.callback(proxy.stop)
        # the design's ceiling: the same machinery as fngate's fast path, none of its features
        minimal, minimal_port = _python_proxy("fngate.bench.minimal_proxy", "minimal-proxy", iso_up.port, lay["iso"].sut, settings)
        stack.callback(minimal.stop)
        gateway = traced = None
        if _fngate_or_skip(settings, skipped, "http1"):
            gateway = GatewayProcess([Upstream("static", LOOPBACK, iso_up.port)], lay["iso"].sut, settings.work, settings.logs)
            stack.callback(gateway.stop)
            if settings.tracing:
                traced = _traced_gateway(settings, stack, Upstream("static", LOOPBACK, iso_up.port), lay["iso"])
        for size in sizes:
            path = HTTP1_SIZES[size]
            targets = [
                Target("nginx static (direct)", DIRECT, direct_up.proc, lay["direct"], f"http://{LOOPBACK}:{direct_up.port}{path}"),
                Target("nginx proxy", NGINX, proxy.proc, lay["iso"], f"http://{LOOPBACK}:{proxy.port}{path}"),
            ]
            if size == "small":
                targets.append(Target(MINIMAL, CEILING, minimal, lay["iso"], f"http://{LOOPBACK}:{minimal_port}{path}"))
            if gateway:
                targets.append(
                    Target(
                        "fngate",
                        FNGATE,
                        gateway.proc,
                        lay["iso"],
                        f"http://{LOOPBACK}:{gateway.port}{path}",
                        invoke_headers("static"),
                        baseline=MINIMAL if size == "small" else None,
                    )
                )
            if traced and size == "small":
                url = f"http://{LOOPBACK}:{traced.port}{path}"
                targets.append(Target(TRACED, FNGATE, traced.proc, lay["iso"], url, invoke_headers("static"), baseline="fngate"))
            rows += alternate(f"http1-{size}", f"wrk -t1 -c{settings.connections}", targets, _wrk(settings), settings)
            if size == "small":
                # Added latency without queueing: one connection, one request at a time. (Under
                # saturation a closed-loop p50 is connections / throughput, not a proxy's delay.)
                latency = [t for t in targets if t.role != DIRECT]
                rows += alternate("http1-latency", "wrk -t1 -c1", latency, _wrk(settings, 1), settings)
    return rows


def traced_options(otlp_port: int, work: Path) -> list[str]:
    """The gateway's options for the tracing-on row: every new trace recorded (the default
    ratio, 1), exported to the discarding receiver, and the access log written."""
    return ["--otlp-endpoint", f"http://{LOOPBACK}:{otlp_port}", "--access-log", str(work / "fngate-access.log")]


def _traced_gateway(settings: Settings, stack: contextlib.ExitStack, upstream: Upstream, layout: Layout) -> GatewayProcess:
    """A second gateway with tracing and the access log on, and the OTLP sink it exports to
    (on the load generator's CPUs: the sink is the collector, not the system under test)."""
    otlp_port = free_port()
    sink = Proc("otlp-sink", [PYTHON, "-m", "fngate.bench.otlp_sink", "--port", str(otlp_port)], layout.load, settings.logs)
    stack.callback(sink.stop)
    wait_port(otlp_port, proc=sink)
    traced = GatewayProcess([upstream], layout.sut, settings.work, settings.logs, observe=traced_options(otlp_port, settings.work))
    stack.callback(traced.stop)
    return traced


def http1_echo(settings: Settings, skipped: dict) -> list[Row]:
    """The same through the fngate/echo sample (aiohttp), where a real function matters."""
    lay = layouts()
    with contextlib.ExitStack() as stack:
        procs = {}
        for name, cpus in (("direct", lay["direct"].upstream), ("iso", lay["iso"].upstream)):
            port = free_port()
            p = Proc(
                f"echo-{name}",
                [PYTHON, "-m", "fngate.backends.samples.echo", "--host", LOOPBACK, "--port", str(port)],
                cpus,
                settings.logs,
            )
            stack.callback(p.stop)
            wait_port(port, proc=p)
            procs[name] = (p, port)
        proxy = Nginx.proxy(settings.work / "echo", procs["iso"][1], lay["iso"].sut, settings.logs)
        stack.callback(proxy.stop)
        targets = [
            Target("echo sample (direct)", DIRECT, procs["direct"][0], lay["direct"], f"http://{LOOPBACK}:{procs['direct'][1]}/echo"),
            Target("nginx proxy", NGINX, proxy.proc, lay["iso"], f"http://{LOOPBACK}:{proxy.port}/echo"),
        ]
        if _fngate_or_skip(settings, skipped, "http1-echo"):
            gateway = GatewayProcess([Upstream("echo", LOOPBACK, procs["iso"][1])], lay["iso"].sut, settings.work, settings.logs)
            stack.callback(gateway.stop)
            targets.append(
                Target("fngate", FNGATE, gateway.proc, lay["iso"], f"http://{LOOPBACK}:{gateway.port}/echo", invoke_headers("echo"))
            )
        return alternate("http1-echo", f"wrk -t1 -c{settings.connections}", targets, _wrk(settings), settings)


def _python_proxy(module: str, name: str, upstream_port: int, cpus: str | None, settings: Settings) -> tuple[Proc, int]:
    """One of the featureless ceiling proxies (bench/minimal_proxy.py, bench/minimal_h2_proxy.py), started and listening."""
    port = free_port()
    proc = Proc(name, [PYTHON, "-m", module, "--port", str(port), "--upstream-port", str(upstream_port)], cpus, settings.logs)
    try:
        wait_port(port, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, port


def _h2_anchors(settings: Settings, skipped: dict, stack: contextlib.ExitStack, upstream_port: int, layout: Layout) -> list[Target]:
    """nghttpx and haproxy in front of the same upstream as the nginx row; a missing one is skipped and said so."""
    targets: list[Target] = []
    for tool, label, start in (("nghttpx", NGHTTPX, Nghttpx), ("haproxy", HAPROXY, Haproxy)):
        if h2_anchors.binary(tool) is None:
            skipped[f"h2-{tool}"] = f"{label} row skipped: {h2_anchors.missing(tool)}"
            say(skipped[f"h2-{tool}"])
            continue
        proxy = start(settings.work / f"h2-{tool}", upstream_port, layout.sut, settings.logs)
        stack.callback(proxy.stop)
        targets.append(Target(label, ANCHOR, proxy.proc, layout, f"http://{LOOPBACK}:{proxy.port}/small"))
    return targets


def h2(settings: Settings, skipped: dict) -> list[Row]:
    """h2load over h2c (prior knowledge), many streams per connection; proxies forward to h1.

    nginx is the anchor the ratios use; nghttpx and haproxy are the other HTTP/2 anchors,
    the minimal Python h2 proxy is the ceiling of the design (ngh2 without features).
    """
    lay = layouts()
    with contextlib.ExitStack() as stack:
        direct_up = Nginx.upstream(settings.work / "h2-direct", lay["direct"].upstream, settings.logs)
        stack.callback(direct_up.stop)
        iso_up = Nginx.upstream(settings.work / "h2-iso", lay["iso"].upstream, settings.logs)
        stack.callback(iso_up.stop)
        proxy = Nginx.proxy(settings.work / "h2", iso_up.port, lay["iso"].sut, settings.logs)
        stack.callback(proxy.stop)
        targets = [
            Target("nginx static h2c (direct)", DIRECT, direct_up.proc, lay["direct"], f"http://{LOOPBACK}:{direct_up.h2c_port}/small"),
            Target("nginx proxy h2c→h1", NGINX, proxy.proc, lay["iso"], f"http://{LOOPBACK}:{proxy.h2c_port}/small"),
        ]
        targets += _h2_anchors(settings, skipped, stack, iso_up.port, lay["iso"])
        baseline = None
        if importlib.util.find_spec("ngh2") is None:
            skipped["h2-minimal"] = f"{MINIMAL_H2} row skipped: ngh2 is not installed (pip install -e '.[bench]')"
            say(skipped["h2-minimal"])
        else:
            minimal, minimal_port = _python_proxy(
                "fngate.bench.minimal_h2_proxy", "minimal-h2-proxy", iso_up.port, lay["iso"].sut, settings
            )
            stack.callback(minimal.stop)
            targets.append(Target(MINIMAL_H2, CEILING, minimal, lay["iso"], f"http://{LOOPBACK}:{minimal_port}/small"))
            baseline = MINIMAL_H2
        if _fngate_or_skip(settings, skipped, "h2"):
            gateway = GatewayProcess([Upstream("static", LOOPBACK, iso_up.port)], lay["iso"].sut, settings.work, settings.logs)
            stack.callback(gateway.stop)
            targets.append(
                Target(
                    "fngate h2c→h1",
                    FNGATE,
                    gateway.proc,
                    lay["iso"],
                    f"http://{LOOPBACK}:{gateway.port}/small",
                    invoke_headers("static"),
                    baseline=baseline,
                )
            )
        desc = f"h2load -t1 -c{settings.h2_clients} -m{settings.h2_streams}"
        return alternate("h2c-small", desc, targets, _h2load(settings, settings.h2_clients, settings.h2_streams), settings)


def grpc(settings: Settings, skipped: dict) -> list[Row]:
    """gRPC unary and server streaming: the grpcio instance directly, through nginx's own
    gRPC proxy (`grpc_pass`, the C anchor the per-core ratio uses) and through fngate.

    The instance is the slow part (a few thousand calls/s per core), so it keeps a
    core to itself in every layout; nginx and the gateway each share the load
    generator's core (h2load needs ~0.2 core here), pinned alike.
    """
    lay = layouts()
    with contextlib.ExitStack() as stack:
        echo = GrpcEcho(lay["shared"].upstream, settings.logs)
        stack.callback(echo.stop)
        direct = Target("grpcio instance (direct)", DIRECT, echo.proc, lay["direct"], f"http://{LOOPBACK}:{echo.port}")
        nginx = Nginx.grpc_proxy(settings.work / "grpc", echo.port, lay["shared"].sut, settings.logs)
        stack.callback(nginx.stop)
        targets = [direct, Target(NGINX_GRPC, NGINX, nginx.proc, lay["shared"], f"http://{LOOPBACK}:{nginx.port}")]
        gateway = None
        if _fngate_or_skip(settings, skipped, "grpc"):
            gateway = GatewayProcess([Upstream("grpc-echo", LOOPBACK, echo.port, "h2c")], lay["shared"].sut, settings.work, settings.logs)
            stack.callback(gateway.stop)
            headers = invoke_headers("grpc-echo")
            targets.append(Target("fngate", FNGATE, gateway.proc, lay["shared"], f"http://{LOOPBACK}:{gateway.grpc_port}", headers))
        for t in targets:
            probe(t.url.removeprefix("http://"), t.headers, settings.stream_replies)
        rows = []
        for method, body in (("Echo", grpc_body(0)), ("EchoStream", grpc_body(settings.stream_replies))):
            scenario = "grpc-unary" if method == "Echo" else f"grpc-stream-{settings.stream_replies}"
            calls = [
                Target(
                    t.label,
                    t.role,
                    t.proc,
                    t.layout,
                    f"{t.url}/fngate.echo.v1.Echo/{method}",
                    {"content-type": "application/grpc", "te": "trailers", **t.headers},
                )
                for t in targets
            ]
            desc = f"h2load -t1 -c{settings.grpc_clients} -m{settings.grpc_streams}, gRPC frames"
            rows += alternate(scenario, desc, calls, _h2load(settings, settings.grpc_clients, settings.grpc_streams, body), settings)
        return rows


def workers(settings: Settings, skipped: dict) -> list[Row]:
    """fngate --workers 2 vs 1 (and nginx with 2 workers), nothing pinned: both cores are shared."""
    if not _fngate_or_skip(settings, skipped, "workers"):
        return []
    free = layouts()["free"]
    with contextlib.ExitStack() as stack:
        up = Nginx.upstream(settings.work / "workers", None, settings.logs)
        stack.callback(up.stop)
        proxy = Nginx.proxy(settings.work / "workers", up.port, None, settings.logs, workers=2)
        stack.callback(proxy.stop)
        targets = [Target("nginx proxy, 2 workers", NGINX, proxy.proc, free, f"http://{LOOPBACK}:{proxy.port}/small")]
        for n in (1, 2):
            gw = GatewayProcess([Upstream("static", LOOPBACK, up.port)], None, settings.work, settings.logs, workers=n)
            stack.callback(gw.stop)
            targets.append(
                Target(
                    f"fngate {n}w",
                    FNGATE,
                    gw.proc,
                    free,
                    f"http://{LOOPBACK}:{gw.port}/small",
                    invoke_headers("static"),
                    baseline="fngate 1w" if n > 1 else None,
                )
            )
        return alternate("http1-workers", f"wrk -t1 -c{settings.connections}", targets, _wrk(settings), settings)
