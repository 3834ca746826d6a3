"""Shared bits of the HTTP sample functions: argument parsing, NVCF env, serving."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

from aiohttp import web

HEALTH_PATHS = ("/health", "/v2/health/ready")


def nvcf_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("NVCF_")}


def parse_args(name: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m fngate.backends.samples.{name}")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    return parser.parse_args()


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(app: web.Application, host: str, port: int, name: str) -> None:
    """Serve until SIGTERM/SIGINT; print the bound address (port 0 picks a free one)."""
    # handler_cancellation: a client that goes away cancels the handler, so /stats can count it
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    sock = socket.create_server((host, port), reuse_port=False, backlog=1024)
    site = web.SockSite(runner, sock, backlog=1024)  # bursts of connections from a gateway or a load test
    await site.start()
    bound = sock.getsockname()[1]
    print(f"{name} listening on {host}:{bound}", flush=True)
    await until_stop_signal()
    await runner.cleanup()


async def until_stop_signal() -> None:
    """Return on SIGTERM or SIGINT, so a sample can shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
