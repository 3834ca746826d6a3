"""Traces and the access log, assembled from the gateway's configuration (proxy/server.py
calls this once): what is off costs nothing, and OpenTelemetry is imported only when
`otlp_endpoint` is set."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fngate.proxy.calls.observation import Observers

if TYPE_CHECKING:
    from fngate.proxy.calls.tracing import Tracing
    from fngate.proxy.config import GatewayConfig
    from fngate.proxy.ops.access_log import AccessLog


class Observability:
    """The gateway's tracer and access log, their start and their flush at stop."""

    def __init__(self, tracing: Tracing | None, access_log: AccessLog | None) -> None:
        self.tracing = tracing
        self.access_log = access_log
        self.observers = Observers(tracing, access_log)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Observability | None:
        """None when neither traces nor the access log are on."""
        tracing = access_log = None
        if config.otlp_endpoint:
            from fngate.proxy.calls.tracing import Tracing

            tracing = Tracing(config.otlp_endpoint, config.trace_sample_ratio, config.trace_service_name)
        if config.access_log:
            from fngate.proxy.ops.access_log import AccessLog

            access_log = AccessLog(config.access_log)
        if tracing is None and access_log is None:
            return None
        return cls(tracing, access_log)

    def start(self) -> None:
        if self.access_log is not None:
            self.access_log.start()

    def metrics(self) -> bytes:
        return self.access_log.metrics().encode() if self.access_log is not None else b""

    async def aclose(self) -> None:
        """Write the last access log lines and export the last spans (in a thread: both block)."""
        loop = asyncio.get_running_loop()
        if self.access_log is not None:
            await loop.run_in_executor(None, self.access_log.close)
        if self.tracing is not None:
            await loop.run_in_executor(None, self.tracing.shutdown)
