"""Readiness probes shared by the backends: HTTP GET, or gRPC health.

A probe answers None when the instance is healthy, or a short reason why not
(which ends up in logs and, for a startup that never succeeds, in healthInfo).
"""

from __future__ import annotations

import asyncio

from .base import HealthCheck


async def probe(health: HealthCheck, host: str, port: int) -> str | None:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that arrives as
    # the probe completes, and the supervising loop that was being stopped probed on forever
    try:
        async with asyncio.timeout(health.timeout_s):
            if health.protocol.lower() == "grpc":
                return await _grpc(host, port, health.timeout_s)
            return await _http(host, port, health)
    except TimeoutError:
        return f"health check timed out after {health.timeout_s:g}s"
    except OSError as exc:
        return f"health check could not connect: {exc.strerror or exc}"


async def _http(host: str, port: int, health: HealthCheck) -> str | None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        uri = health.uri if health.uri.startswith("/") else "/" + health.uri
        writer.write(f"GET {uri} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            return f"health check got no HTTP response from {uri}"
        status = int(parts[1])
        if status != health.expected_status:
            return f"health check {uri} answered {status}, expected {health.expected_status}"
        return None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def _grpc(host: str, port: int, timeout: float) -> str | None:
    """grpc.health.v1 Check (SERVING means healthy), via backends/grpc_health.py."""
    from .grpc_health import probe_grpc_health

    healthy, detail = await probe_grpc_health(host, port, "", timeout)
    return None if healthy else detail
