"""Memory per idle keep-alive connection: RSS growth of the proxy while N clients sit idle.

Each connection makes one request first (so the server has set up everything a
connection costs, parser and buffers included) and then stays open and idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fngate.bench.fngate import GatewayProcess, Upstream, invoke_headers
from fngate.bench.nginx import Nginx
from fngate.bench.procs import Proc
from fngate.bench.rawhttp import get
from fngate.bench.runner import Settings, fngate_unavailable, run_async, say
from fngate.proxy.config import LOOPBACK

MIB = 2**20


async def _idle(port: int, headers: dict[str, str], count: int, proc: Proc) -> dict:
    rss_before = proc.rss()
    opening = asyncio.Semaphore(256)
    writers: list[asyncio.StreamWriter] = []
    errors: list[str] = []

    async def open_one() -> None:
        async with opening:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 30)
                writers.append(writer)
                status = await asyncio.wait_for(get(reader, writer, "/small", headers), 30)
                if status != 200:
                    raise RuntimeError(f"status {status}")
            except Exception as e:  # a failed connection is not held; keep counting the others
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(open_one() for _ in range(count)))
    await asyncio.sleep(1.0)
    rss_after = proc.rss()
    for w in writers:
        w.close()
    held = count - len(errors)
    return {
        "held": held,
        "asked": count,
        "rss_before_mib": rss_before / MIB,
        "rss_after_mib": rss_after / MIB,
        "kib_per_connection": (rss_after - rss_before) / 1024 / held if held else None,
        "error": errors[0] if errors else None,
    }


def idle_connections(settings: Settings, skipped: dict) -> list[dict]:
    out = []
    with contextlib.ExitStack() as stack:
        up = Nginx.upstream(settings.work / "memory", None, settings.logs)
        stack.callback(up.stop)
        proxy = Nginx.proxy(settings.work / "memory", up.port, None, settings.logs)
        stack.callback(proxy.stop)
        targets: list[tuple[str, int, dict[str, str], Any]] = [("nginx proxy", proxy.port, {}, proxy.proc)]
        why = fngate_unavailable(settings)
        if why:
            skipped["memory"] = f"fngate row skipped: {why}"
        else:
            gw = GatewayProcess([Upstream("static", LOOPBACK, up.port)], None, settings.work, settings.logs)
            stack.callback(gw.stop)
            targets.append(("fngate", gw.port, invoke_headers("static"), gw.proc))
        time.sleep(0.5)
        for name, port, headers, proc in targets:
            row = {"target": name, **run_async(_idle(port, headers, settings.idle_connections, proc))}
            say(f"memory: {name} holds {row['held']} idle connections, {row['kib_per_connection'] or 0:.1f} KiB each")
            out.append(row)
    return out
