"""SSE: latency the gateway adds to each event, and how many open streams one gateway process holds.

The `fngate/sse` sample stamps every chunk with its wall clock (`created_ns`); the
client (this process, on the load core) subtracts it from the arrival time, directly
and through the gateway, and the difference of the two distributions is the added
latency per event. Holding: open N streams through the gateway (one event, then long
pauses), count those that got their first event, and read the gateway's RSS growth and
open descriptors. Two transports, each against a fresh gateway and instance: HTTP/1.1,
one client connection per stream, which costs the gateway two descriptors per stream
(client and instance), and HTTP/2, streams multiplexed over a few client connections,
which costs it one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from fngate.bench.fngate import GatewayProcess, Upstream, invoke_headers
from fngate.bench.h2sse import SseHolder, request_headers
from fngate.bench.loadgen import percentile
from fngate.bench.procs import PYTHON, Layout, Proc, free_port, layouts, wait_port
from fngate.bench.rawhttp import body_chunks, read_head, request_bytes, sse_events
from fngate.bench.runner import Settings, fngate_unavailable, run_async, say
from fngate.proxy.config import LOOPBACK, GatewayConfig

PATH = "/v1/chat/completions?stream=true&tokens={tokens}&interval={interval}"
HOLD_PATH = PATH.format(tokens=1_000_000, interval=120)  # one event, then none for the whole measurement
MIB = 2**20
# each held stream holds an instance slot: past the gateway's per-connection cap a stream would wait
H2_STREAMS_PER_CONNECTION = GatewayConfig().max_slots_per_connection
HTTP1, HTTP2 = "HTTP/1.1", "HTTP/2"


async def _stream_delays(port: int, headers: dict[str, str], streams: int, events: int) -> list[float]:
    delays: list[float] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(request_bytes("POST", PATH.format(tokens=events, interval=0.01), {**headers, "Accept": "text/event-stream"}))
            status, resp_headers = await read_head(reader)
            if status != 200:
                raise RuntimeError(f"SSE request answered {status}")
            async for data in sse_events(reader, resp_headers):
                now = time.time_ns()
                if data == b"[DONE]":
                    break
                delays.append((now - orjson.loads(data)["created_ns"]) / 1e6)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(streams)))
    return delays


def _descriptors(pid: int) -> tuple[int | None, int | None]:
    """(open descriptors, soft RLIMIT_NOFILE) of a process, from /proc."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None, None
    line = next((ln for ln in limits.splitlines() if ln.startswith("Max open files")), "")
    soft = line.split()[3] if len(line.split()) > 3 else ""
    return fds, int(soft) if soft.isdigit() else None


async def _instance_active(port: int) -> int | None:
    """Streams the sample instance is serving right now (its /stats)."""
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(request_bytes("GET", "/stats", {}))
            _, headers = await read_head(reader)
            body = b"".join([c async for c in body_chunks(reader, headers)])
            return orjson.loads(body)["active"]
        finally:
            writer.close()
    except (OSError, ValueError, KeyError):
        return None


def _hold_result(
    transport: str,
    asked: int,
    held: int,
    connections: int,
    opened_in: float,
    rss_before: int,
    gateway: GatewayProcess,
    instance_active: int | None,
    failures: Counter,
) -> dict:
    rss_after = gateway.proc.rss()
    fds, fd_limit = _descriptors(gateway.proc.pid)
    first = next(iter(failures), None)
    return {
        "transport": transport,
        "asked": asked,
        "held": held,
        "connections": connections,
        "opened_in_s": round(opened_in, 2),
        "rss_before_mib": rss_before / MIB,
        "rss_after_mib": rss_after / MIB,
        "kib_per_stream": (rss_after - rss_before) / 1024 / held if held else None,
        "gateway_fds": fds,
        "gateway_fd_limit": fd_limit,
        "instance_active": instance_active,
        "errors": sum(failures.values()),
        "error": first,
        "error_kinds": dict(failures.most_common(5)),
    }


async def _hold_http1(port: int, instance_port: int, headers: dict[str, str], count: int, gateway: GatewayProcess) -> dict:
    """One HTTP/1.1 connection per stream."""
    rss_before = gateway.proc.rss()
    opening = asyncio.Semaphore(256)
    writers: list[asyncio.StreamWriter] = []
    failures: Counter[str] = Counter()
    held = 0
    request = request_bytes("POST", HOLD_PATH, {**headers, "Accept": "text/event-stream"})

    async def open_one() -> None:
        nonlocal held
        async with opening:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 30)
                writers.append(writer)
                writer.write(request)
                status, resp_headers = await asyncio.wait_for(read_head(reader), 30)
                if status != 200:
                    raise RuntimeError(f"status {status}")
                await asyncio.wait_for(anext(sse_events(reader, resp_headers)), 30)
                held += 1
                if held % 1000 == 0:
                    say(f"sse {HTTP1}: {held} streams open after {time.monotonic() - t0:.1f} s")
            except Exception as e:  # any failure means this stream is not held; keep counting
                failures[f"{type(e).__name__}: {e}"] += 1

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(open_one()) for _ in range(count)]
    # a gateway that stops accepting must not hang the benchmark: give up after a deadline
    deadline = max(60.0, count / 50)
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        failures[f"not opened within {deadline:.0f} s"] += len(pending)
    opened_in = time.monotonic() - t0
    await asyncio.sleep(1.0)  # let the gateway settle before reading its RSS
    result = _hold_result(HTTP1, count, held, held, opened_in, rss_before, gateway, await _instance_active(instance_port), failures)
    for w in writers:
        w.close()
    return result


async def _hold_http2(port: int, instance_port: int, headers: dict[str, str], count: int, gateway: GatewayProcess) -> dict:
    """Streams multiplexed over ceil(count / 500) HTTP/2 connections."""
    rss_before = gateway.proc.rss()
    loop = asyncio.get_running_loop()
    conns = math.ceil(count / H2_STREAMS_PER_CONNECTION)
    request = request_headers(port, HOLD_PATH, {**headers, "accept": "text/event-stream"})
    opened = 0

    def on_held() -> None:
        nonlocal opened
        opened += 1
        if opened % 1000 == 0:
            say(f"sse {HTTP2}: {opened} streams open after {time.monotonic() - t0:.1f} s")

    t0 = time.monotonic()
    holders: list[SseHolder] = []
    failures: Counter[str] = Counter()
    for i in range(conns):
        streams = count // conns + (1 if i < count % conns else 0)
        try:
            _, holder = await loop.create_connection(functools.partial(SseHolder, request, streams, on_held), LOOPBACK, port)
        except OSError as e:
            failures[f"connect: {e}"] += streams
            continue
        holders.append(holder)
    deadline = max(60.0, count / 50)
    if holders:
        await asyncio.wait([h.settled for h in holders], timeout=deadline)
    opened_in = time.monotonic() - t0
    await asyncio.sleep(1.0)  # let the gateway settle before reading its RSS
    for h in holders:
        failures.update(h.failures)
        late = len(h.waiting) + h.to_open
        if late:
            failures[f"no first event within {deadline:.0f} s"] += late
    # held = open at the moment of measuring: a stream cut after its first event does not count
    held = sum(len(h.held) for h in holders)
    ever = sum(h.ever_held for h in holders)
    if ever > held:
        failures["cut after the first event"] += ever - held
    result = _hold_result(HTTP2, count, held, len(holders), opened_in, rss_before, gateway, await _instance_active(instance_port), failures)
    for h in holders:
        if h.transport is not None:
            h.transport.close()
    return result


def _start(stack: contextlib.ExitStack, settings: Settings, lay: Layout, name: str, slots: int) -> tuple[int, GatewayProcess]:
    """A fresh sample instance and a gateway in front of it; returns (instance port, gateway)."""
    port = free_port()
    sample = Proc(
        f"sse-sample-{name}",
        [PYTHON, "-m", "fngate.backends.samples.sse", "--host", LOOPBACK, "--port", str(port)],
        lay.upstream,
        settings.logs,
    )
    stack.callback(sample.stop)
    wait_port(port, proc=sample)
    # the instance's slot limit must not be what caps the streams held
    gateway = GatewayProcess([Upstream("sse", LOOPBACK, port)], lay.sut, settings.work, settings.logs, max_concurrency=slots)
    stack.callback(gateway.stop)
    return port, gateway


def _latency(settings: Settings, lay: Layout) -> list[dict]:
    with contextlib.ExitStack() as stack:
        port, gateway = _start(stack, settings, lay, "latency", settings.sse_latency_streams)
        targets = {"sse sample (direct)": (port, {}), "fngate": (gateway.port, invoke_headers("sse"))}
        delays: dict[str, list[float]] = {name: [] for name in targets}
        for i in range(max(settings.runs, 1)):
            for name in list(targets) if i % 2 == 0 else list(targets)[::-1]:
                p, h = targets[name]
                delays[name] += run_async(_stream_delays(p, h, settings.sse_latency_streams, settings.sse_events))
    latency: list[dict[str, Any]] = []
    for name, values in delays.items():
        values.sort()
        latency.append(
            {
                "target": name,
                "streams": settings.sse_latency_streams,
                "events": len(values),
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
            }
        )
    direct, through = latency
    through["added_p50_ms"] = through["p50_ms"] - direct["p50_ms"]
    through["added_p99_ms"] = through["p99_ms"] - direct["p99_ms"]
    say(f"sse: added per event p50 {through['added_p50_ms']:.3f} ms, p99 {through['added_p99_ms']:.3f} ms")
    return latency


def hold(settings: Settings, lay: Layout, transport: str) -> dict:
    """Hold settings.sse_streams streams through a fresh gateway over one transport."""
    with contextlib.ExitStack() as stack:
        port, gateway = _start(stack, settings, lay, transport.replace("/", ""), settings.sse_streams)
        holder = _hold_http2 if transport == HTTP2 else _hold_http1
        result = run_async(holder(gateway.port, port, invoke_headers("sse"), settings.sse_streams, gateway))
    say(
        f"sse {transport}: held {result['held']} of {result['asked']} streams over {result['connections']} "
        f"connections, {result['kib_per_stream'] or 0:.1f} KiB each, gateway descriptors {result['gateway_fds']} "
        f"of {result['gateway_fd_limit']}"
    )
    return result


def sse(settings: Settings, skipped: dict) -> dict:
    why = fngate_unavailable(settings)
    if why:
        skipped["sse"] = f"SSE needs the gateway: {why}"
        say(skipped["sse"])
        return {}
    lay = layouts()["iso"]  # before pinning this process, which would make layouts() see one core
    affinity = os.sched_getaffinity(0)
    if lay.load is not None:
        os.sched_setaffinity(0, {int(lay.load)})
    try:
        latency = _latency(settings, lay)
        holds = [hold(settings, lay, transport) for transport in (HTTP1, HTTP2)]
    finally:
        os.sched_setaffinity(0, affinity)
    return {"latency": latency, "hold": holds, "layout": lay.describe()}
