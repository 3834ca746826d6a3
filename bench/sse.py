"""SSE: latency the gateway adds to each event, and how many open streams one gateway process holds.

The `fngate/sse` sample stamps every chunk with its wall clock (`created_ns`); the
client (this process, on the load core) subtracts it from the arrival time, directly
and through the gateway, and the difference of the two distributions is the added
latency per event. Holding: open N streams through the gateway (one event, then long
pauses), count those that got their first event, and read the gateway's RSS growth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter

import orjson

from bench.fngate import GatewayProcess, Upstream, invoke_headers
from bench.loadgen import percentile
from bench.procs import PYTHON, Proc, free_port, layouts, wait_port
from bench.rawhttp import read_head, request_bytes, sse_events
from bench.runner import Settings, fngate_unavailable, run_async, say

PATH = "/v1/chat/completions?stream=true&tokens={tokens}&interval={interval}"
MIB = 2**20


async def _stream_delays(port: int, headers: dict[str, str], streams: int, events: int) -> list[float]:
    delays: list[float] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
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


async def _hold(port: int, headers: dict[str, str], count: int, gateway: GatewayProcess) -> dict:
    rss_before = gateway.proc.rss()
    opening = asyncio.Semaphore(256)
    writers: list[asyncio.StreamWriter] = []
    errors: list[str] = []
    opened: list[float] = []
    request = request_bytes("POST", PATH.format(tokens=1_000_000, interval=120), {**headers, "Accept": "text/event-stream"})

    async def open_one() -> None:
        async with opening:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
                writers.append(writer)
                writer.write(request)
                status, resp_headers = await asyncio.wait_for(read_head(reader), 30)
                if status != 200:
                    raise RuntimeError(f"status {status}")
                await asyncio.wait_for(anext(sse_events(reader, resp_headers)), 30)
                opened.append(time.monotonic())
                if len(opened) % 1000 == 0:
                    say(f"sse: {len(opened)} streams open after {opened[-1] - t0:.1f} s")
            except Exception as e:  # any failure means this stream is not held; keep counting
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(open_one()) for _ in range(count)]
    # a gateway that stops accepting must not hang the benchmark: give up after a deadline
    done, pending = await asyncio.wait(tasks, timeout=max(60.0, count / 50))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        errors += [f"not opened within {max(60.0, count / 50):.0f} s"] * len(pending)
    held = count - len(errors)
    await asyncio.sleep(1.0)  # let the gateway settle before reading its RSS
    rss_after = gateway.proc.rss()
    opened_in = time.monotonic() - t0
    for w in writers:
        w.close()
    return {
        "asked": count, "held": held, "opened_in_s": round(opened_in, 2),
        "rss_before_mib": rss_before / MIB, "rss_after_mib": rss_after / MIB,
        "kib_per_stream": (rss_after - rss_before) / 1024 / held if held else None,
        "error": errors[0] if errors else None, "errors": len(errors),
        "error_kinds": dict(Counter(e.split(":", 1)[0] for e in errors).most_common(5)),
    }


def sse(settings: Settings, skipped: dict) -> dict:
    why = fngate_unavailable(settings)
    if why:
        skipped["sse"] = f"SSE needs the gateway: {why}"
        say(skipped["sse"])
        return {}
    lay = layouts()["iso"]
    affinity = os.sched_getaffinity(0)
    with contextlib.ExitStack() as stack:
        port = free_port()
        sample = Proc("sse-sample", [PYTHON, "-m", "backends.samples.sse", "--host", "127.0.0.1", "--port", str(port)], lay.upstream, settings.logs)
        stack.callback(sample.stop)
        wait_port(port, proc=sample)
        # the instance's slot limit must not be what caps the streams held
        slots = settings.sse_streams + settings.sse_latency_streams
        gateway = GatewayProcess([Upstream("sse", "127.0.0.1", port)], lay.sut, settings.work, settings.logs,
                                 max_concurrency=slots)
        stack.callback(gateway.stop)
        if lay.load is not None:
            os.sched_setaffinity(0, {int(lay.load)})
            stack.callback(os.sched_setaffinity, 0, affinity)
        targets = {"sse sample (direct)": (port, {}), "fngate": (gateway.port, invoke_headers("sse"))}
        delays: dict[str, list[float]] = {name: [] for name in targets}
        for i in range(max(settings.runs, 1)):
            for name in (list(targets) if i % 2 == 0 else list(targets)[::-1]):
                p, h = targets[name]
                delays[name] += run_async(_stream_delays(p, h, settings.sse_latency_streams, settings.sse_events))
        latency = []
        for name, values in delays.items():
            values.sort()
            latency.append({"target": name, "streams": settings.sse_latency_streams, "events": len(values),
                            "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99)})
        direct, through = latency
        through["added_p50_ms"] = through["p50_ms"] - direct["p50_ms"]
        through["added_p99_ms"] = through["p99_ms"] - direct["p99_ms"]
        say(f"sse: added per event p50 {through['added_p50_ms']:.3f} ms, p99 {through['added_p99_ms']:.3f} ms")
        hold = run_async(_hold(gateway.port, invoke_headers("sse"), settings.sse_streams, gateway))
        say(f"sse: held {hold['held']} of {hold['asked']} streams, {hold['kib_per_stream'] or 0:.1f} KiB each")
        return {"latency": latency, "hold": hold, "layout": lay.describe()}
