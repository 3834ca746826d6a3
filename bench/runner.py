"""Alternating runs: every target of a scenario is measured once per round, rounds alternate order.

Alternating (A B C, C B A, ...) spreads slow drifts of a shared machine over all targets
instead of charging them to whichever ran last. A warm-up run per target precedes the
first round and is not recorded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fngate.bench import profile
from fngate.bench.loadgen import Sample
from fngate.bench.procs import CpuMeter, Layout, Proc
from fngate.bench.report import FNGATE, Row


@dataclass
class Settings:
    runs: int = 3
    duration: float = 10.0
    warmup: float = 2.0
    connections: int = 64  # wrk -c
    h2_clients: int = 16  # h2load -c
    h2_streams: int = 16  # h2load -m
    grpc_clients: int = 4
    grpc_streams: int = 16
    stream_replies: int = 10  # replies per server-streaming gRPC call
    sse_streams: int = 10_000  # concurrent SSE streams to hold through one gateway
    sse_latency_streams: int = 32
    sse_events: int = 100
    idle_connections: int = 1000
    fngate: bool = True  # False: measure only direct and nginx (no gateway rows)
    profile: bool = False  # one extra run per fngate row with py-spy attached (not recorded)
    tracing: bool = False  # http1-small also gets an "fngate (tracing on)" row (scenarios.TRACED)
    work: Path = Path("/tmp")
    logs: Path = Path("/tmp")


@dataclass
class Target:
    label: str
    role: str  # report.DIRECT | NGINX | FNGATE
    proc: Proc  # the system under test, whose CPU is measured
    layout: Layout
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    baseline: str | None = None


def fngate_unavailable(settings: Settings) -> str | None:
    """Why the fngate rows cannot run (None when they can)."""
    if not settings.fngate:
        return "disabled by --no-fngate"
    from fngate.bench.fngate import gateway_available

    return gateway_available()


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def alternate(
    scenario: str, load_desc: str, targets: list[Target], load: Callable[[Target, float], Sample], settings: Settings
) -> list[Row]:
    """Measure each target `settings.runs` times, alternating the order; one Row per target."""
    rows = {t.label: Row(scenario, t.label, t.role, t.layout.describe(), load_desc, baseline=t.baseline) for t in targets}
    if settings.warmup > 0:
        for t in targets:
            load(t, settings.warmup)
    for i in range(settings.runs):
        order = targets if i % 2 == 0 else targets[::-1]
        for t in order:
            meter = CpuMeter(t.proc)
            meter.start()
            sample = load(t, settings.duration)
            sample.sut_cpu = meter.stop()
            rows[t.label].samples.append(sample)
            say(
                f"{scenario} / {t.label} run {i + 1}: {sample.rps:,.0f} req/s, p50 {sample.p50_ms:.2f} ms, "
                f"p99 {sample.p99_ms:.2f} ms, SUT {sample.sut_cpu:.2f} cores, errors {sample.errors}"
            )
    if settings.profile:
        for t in targets:
            if t.role == FNGATE:
                rows[t.label].profile = _profiled_run(scenario, t, load, settings)
    return list(rows.values())


def _profiled_run(scenario: str, t: Target, load: Callable[[Target, float], Sample], settings: Settings) -> dict | None:
    raw = settings.work / f"profile-{scenario}-{t.label.replace(' ', '_')}.txt"
    spy = profile.start(t.proc.pid, settings.duration, raw, t.layout.load)
    if spy is None:
        say("py-spy is not installed (pip install py-spy): no profile")
        return None
    load(t, settings.duration)
    _, err = spy.communicate(timeout=settings.duration + 30)
    if not raw.exists():
        say(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        return None
    summary = profile.summarise(raw)
    top = ", ".join(f"{f['frame']} {f['pct']}%" for f in summary["self"][:5])
    say(f"{scenario} / {t.label} profile (self): {top}")
    return summary


def run_async(coro):
    """Run a coroutine on uvloop when it is installed (as the gateway does), else asyncio."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run(coro)
    return uvloop.run(coro)
