"""A minimal HTTP/2 server that hands every stream to a GrpcHandler.

Test scaffolding only: it plays the part of the gateway's HTTP/2 server driver so the
relay can be exercised with real gRPC clients over loopback. It implements the
Downstream side of the seam in proxy/grpc_relay.py with real h2 flow control.
"""

from __future__ import annotations

import asyncio
import socket

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamReset, TrailersReceived, WindowUpdated
from h2.exceptions import H2Error

from proxy.grpc_relay import GrpcHandler


class _Stream:
    def __init__(self, conn: "FrontConnection", sid: int) -> None:
        self.conn, self.sid = conn, sid

    def send_headers(self, headers, end_stream=False):
        self.conn.call_h2(self.conn.h2.send_headers, self.sid, headers, end_stream=end_stream)

    def send_trailers(self, headers):
        self.conn.call_h2(self.conn.h2.send_headers, self.sid, headers, end_stream=True)

    def reset(self, code):
        self.conn.calls.pop(self.sid, None)
        self.conn.call_h2(self.conn.h2.reset_stream, self.sid, code)

    def ack(self, n):
        if n:
            self.conn.call_h2(self.conn.h2.acknowledge_received_data, n, self.sid)

    async def send_data(self, data, end_stream=False):
        conn, view = self.conn, memoryview(data)
        while True:
            if conn.closed:
                raise ConnectionError("client connection closed")
            try:
                room = min(conn.h2.local_flow_control_window(self.sid), conn.h2.max_outbound_frame_size, len(view))
            except H2Error:
                raise ConnectionError("client stream closed") from None
            if room == 0 and view:
                fut = conn.windows.setdefault(self.sid, asyncio.get_running_loop().create_future())
                await fut
                continue
            last = room == len(view)
            conn.h2.send_data(self.sid, bytes(view[:room]), end_stream=end_stream and last)
            conn.flush()
            view = view[room:]
            if conn.drain is not None:
                await conn.drain
            if last:
                return


class FrontConnection(asyncio.Protocol):
    def __init__(self, handler: GrpcHandler) -> None:
        self.handler = handler
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.calls = {}
        self.windows: dict[int, asyncio.Future] = {}
        self.drain = None
        self.closed = False
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2.initiate_connection()
        self.h2.update_settings({4: 1 << 20})  # INITIAL_WINDOW_SIZE
        self.h2.increment_flow_control_window((16 << 20) - 65535)
        self.flush()

    def call_h2(self, fn, *args, **kw):
        if self.closed:
            return
        try:
            fn(*args, **kw)
        except H2Error:
            return
        self.flush()

    def flush(self):
        out = self.h2.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    def data_received(self, data):
        try:
            events = self.h2.receive_data(data)
        except H2Error:
            self.flush()
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, RequestReceived):
                ended = ev.stream_ended is not None
                self.calls[ev.stream_id] = self.handler.open(ev.headers, _Stream(self, ev.stream_id), ended)
            elif isinstance(ev, DataReceived):
                call = self.calls.get(ev.stream_id)
                if call is None:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    call.on_data(ev.data, ev.flow_controlled_length, ev.stream_ended is not None)
            elif isinstance(ev, TrailersReceived):
                call = self.calls.get(ev.stream_id)
                if call is not None:
                    call.on_trailers(ev.headers)
            elif isinstance(ev, StreamReset):
                call = self.calls.pop(ev.stream_id, None)
                if call is not None:
                    call.on_reset(ev.error_code)
            elif isinstance(ev, WindowUpdated):
                targets = list(self.windows) if ev.stream_id == 0 else [ev.stream_id]
                for sid in targets:
                    fut = self.windows.pop(sid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif isinstance(ev, ConnectionTerminated):
                self.transport.close()
        self.flush()

    def pause_writing(self):
        self.drain = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self.drain = None

    def connection_lost(self, exc):
        self.closed = True
        for call in list(self.calls.values()):
            call.on_reset(ErrorCodes.CANCEL)
        self.calls.clear()
        for fut in self.windows.values():
            if not fut.done():
                fut.set_result(None)
        self.resume_writing()


async def start_front(handler: GrpcHandler) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FrontConnection(handler), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
