"""Keep-alive pools of HTTP/1.1 connections, one per instance address.

Idle connections are reused newest first and expire by timestamp: checked when a
connection is taken, and swept by one `call_later` timer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic  # (bound at import: no module attribute lookup per request)
from typing import cast

from fngate.proxy.instances.h1 import H1Upstream


def _factory(key: tuple[str, int]) -> Callable[[], asyncio.Protocol]:
    """H1Upstream is an asyncio protocol without deriving from asyncio.Protocol (instances/h1.py)."""
    return cast("Callable[[], asyncio.Protocol]", lambda: H1Upstream(key))


class ConnectFailed(Exception):
    """Could not open a connection to the instance (refused, unreachable, timed out)."""


class H1Pool:
    __slots__ = ("_sweeper", "connect_timeout", "idle", "keepalive", "max_idle", "opened")

    def __init__(self, keepalive: float, max_idle: int, connect_timeout: float) -> None:
        self.idle: dict[tuple[str, int], list[H1Upstream]] = {}
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._sweeper: asyncio.TimerHandle | None = None
        self.opened = 0  # connections opened (a counter, for metrics and tests)

    def take_idle(self, host: str, port: int) -> H1Upstream | None:
        """The newest live idle connection to host:port, or None (no I/O)."""
        stack = self.idle.get((host, port))
        if stack:
            expiry = monotonic() - self.keepalive
            while stack:
                conn = stack.pop()
                if not conn.closed and conn.idle_since > expiry:
                    return conn
                conn.close()
        return None

    async def acquire(self, host: str, port: int) -> tuple[H1Upstream, bool]:
        """(connection, reused)."""
        conn = self.take_idle(host, port)
        if conn is not None:
            return conn, True
        key = (host, port)
        loop = asyncio.get_running_loop()
        try:
            _, made = await asyncio.wait_for(loop.create_connection(_factory(key), host, port), self.connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise ConnectFailed(f"cannot connect to the instance at {host}:{port}: {exc or 'timeout'}") from None
        self.opened += 1
        return cast(H1Upstream, made), False

    def release(self, conn: H1Upstream) -> None:
        if not conn.reusable():
            conn.close()
            return
        stack = self.idle.setdefault(conn.key, [])
        if len(stack) >= self.max_idle:
            conn.close()
            return
        conn.reset_for_pool()
        conn.idle_since = monotonic()
        stack.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        expiry = monotonic() - self.keepalive
        for key, stack in list(self.idle.items()):
            keep = [c for c in stack if not c.closed and c.idle_since > expiry]
            for c in stack:
                if c not in keep:
                    c.close()
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
        if self.idle:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for stack in self.idle.values():
            for c in stack:
                c.close()
        self.idle.clear()
