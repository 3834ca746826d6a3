"""A client connection before its protocol is known: sniff the HTTP/2 preface (or read
the TLS ALPN choice), then hand the transport to the HTTP/1.1 or HTTP/2 driver."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, cast

from fngate.proxy.drivers.h1 import H1Server
from fngate.proxy.drivers.h2 import H2Server

if TYPE_CHECKING:
    from fngate.proxy.calls.exchange import OpenConnections, RequestHandler
    from fngate.proxy.config import GatewayConfig

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class ClientConnection(asyncio.Protocol):
    __slots__ = ("_buf", "_timer", "config", "connections", "grpc", "h2_only", "handler", "transport")

    def __init__(
        self, config: GatewayConfig, handler: RequestHandler, connections: OpenConnections, grpc: Any = None, h2_only: bool = False
    ) -> None:
        self.config = config
        self.handler = handler
        self.connections = connections
        self.grpc = grpc  # the gRPC stream handler (proxy/drivers/h2.py); None: gRPC is not served here
        self.h2_only = h2_only
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's transport is a Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            alpn = ssl_obj.selected_alpn_protocol()
            self._switch(alpn == "h2" or self.h2_only)
            return
        if self.h2_only:
            self._switch(True)
            return
        self._timer = asyncio.get_running_loop().call_later(self.config.client_header_timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        n = min(len(buf), len(PREFACE))
        if buf[:n] != PREFACE[:n]:
            self._buf = buf
            self._switch(False)
        elif n == len(PREFACE):
            self._buf = buf
            self._switch(True)
        else:
            self._buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _switch(self, h2: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # either is a protocol by its methods (drivers/h1.py, drivers/h2.py)
        driver = cast(
            asyncio.Protocol,
            H2Server(self.config, self.handler, self.connections, self.grpc)
            if h2
            else H1Server(self.config, self.handler, self.connections),
        )
        transport = self.transport
        assert transport is not None  # connection_made ran
        transport.set_protocol(driver)
        driver.connection_made(transport)
        if self._buf:
            data, self._buf = self._buf, b""
            driver.data_received(data)
