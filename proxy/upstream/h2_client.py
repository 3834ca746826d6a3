"""Upstream HTTP/2 cleartext (h2c) connections to instances, multiplexed and reused.

One H2Upstream is one TCP connection to an instance carrying many concurrent streams.
H2UpstreamPool keeps them per endpoint and opens another connection only when every
existing one has reached the peer's SETTINGS_MAX_CONCURRENT_STREAMS.

Each stream reports to a sink (the relay) through plain method calls, in the order
the frames arrived. Flow control is end to end: received DATA is acknowledged to the
instance only when the sink calls `ack()` (after it forwarded the bytes), and
`send_data()` waits for the instance's window, so neither side can fill the gateway.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes
from h2.stream import StreamState

from fngate.proxy.h2_codec import install as plain_hpack
from fngate.proxy.h2_limits import CheapStreamCount

_WRITABLE = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)


class UpstreamLost(ConnectionError):
    """The connection to the instance failed or closed while the stream was open."""

    http_status = 502
    grpc_status = 14  # UNAVAILABLE


class StreamSink(Protocol):
    """What the relay implements to receive one upstream stream."""

    def on_response(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None: ...
    def on_data(self, data: bytes, flow_len: int, end_stream: bool) -> None: ...
    def on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None: ...
    def on_reset(self, error_code: int) -> None: ...
    def on_lost(self, exc: Exception) -> None: ...


class H2Upstream(asyncio.Protocol):
    """One h2c connection to an instance (client side)."""

    __slots__ = (
        "_conn_window",
        "_drain",
        "_flush_pending",
        "_on_idle",
        "_stream_window",
        "_windows",
        "closed",
        "goaway",
        "h2",
        "key",
        "ready",
        "sinks",
        "transport",
    )

    def __init__(self, key: tuple[str, int], stream_window: int, conn_window: int, on_idle=None) -> None:
        self.key = key
        # headers come from the validating server driver: no second validation pass here
        self.h2 = plain_hpack(
            CheapStreamCount(
                H2Configuration(
                    # (normalising only joins request cookie fields: nothing to do on responses)
                    client_side=True,
                    header_encoding=None,
                    validate_inbound_headers=False,
                    normalize_inbound_headers=False,
                    validate_outbound_headers=False,
                    normalize_outbound_headers=False,
                )
            )
        )
        self.transport: asyncio.Transport | None = None
        self.sinks: dict[int, StreamSink] = {}
        self.ready = asyncio.get_running_loop().create_future()  # set on the peer's first SETTINGS
        self.closed = False
        self.goaway = False
        self._windows: dict[int, asyncio.Future] = {}  # stream id (0 = any) -> waiter for window
        self._drain: asyncio.Future | None = None
        self._stream_window = stream_window
        self._conn_window = conn_window
        self._on_idle = on_idle
        self._flush_pending = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2.initiate_connection()
        self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: self._stream_window, SettingCodes.ENABLE_PUSH: 0})
        if self._conn_window > 65535:
            self.h2.increment_flow_control_window(self._conn_window - 65535)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            self._fail(UpstreamLost(f"HTTP/2 protocol error from instance: {exc}"))
            return
        for event in events:
            handler = _DISPATCH.get(type(event))
            if handler is not None:
                handler(self, event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(UpstreamLost(f"connection to instance lost: {exc or 'closed by peer'}"))

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None:
            if not self._drain.done():
                self._drain.set_result(None)
            self._drain = None

    # -- events ----------------------------------------------------------------------------
    def _response(self, ev: ResponseReceived) -> None:
        sink = self.sinks.get(ev.stream_id)
        if sink is not None:
            ended = ev.stream_ended is not None
            if ended:
                self._forget(ev.stream_id)
            sink.on_response(ev.headers, ended)

    def _data(self, ev: DataReceived) -> None:
        sink = self.sinks.get(ev.stream_id)
        if sink is None:  # stream already reset by us: give the credit straight back
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            return
        ended = ev.stream_ended is not None
        if ended:
            self._forget(ev.stream_id)
        sink.on_data(ev.data, ev.flow_controlled_length, ended)

    def _trailers(self, ev: TrailersReceived) -> None:
        sink = self.sinks.get(ev.stream_id)
        if sink is not None:
            self._forget(ev.stream_id)
            sink.on_trailers(ev.headers)

    def _reset(self, ev: StreamReset) -> None:
        sink = self.sinks.get(ev.stream_id)
        if sink is not None:
            self._forget(ev.stream_id)
            sink.on_reset(ev.error_code)

    def _window(self, ev: WindowUpdated) -> None:
        if ev.stream_id == 0:
            self._wake_all()
        else:
            fut = self._windows.pop(ev.stream_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _settings(self, ev: RemoteSettingsChanged) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        if SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
            self._wake_all()

    def _terminated(self, ev: ConnectionTerminated) -> None:
        self.goaway = True
        last = ev.last_stream_id if ev.last_stream_id is not None else 0
        for sid in [s for s in self.sinks if s > last]:  # never processed: safe to report lost
            self.sinks.pop(sid).on_lost(UpstreamLost(f"instance sent GOAWAY ({ErrorCodes(ev.error_code).name})"))
        if not self.sinks and self.transport is not None:
            self.transport.close()

    # -- streams ---------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return not self.closed and not self.goaway and self.h2.open_outbound_streams < self.h2.remote_settings.max_concurrent_streams

    def open_stream(self, headers: list[tuple[bytes, bytes]], sink: StreamSink, end_stream: bool = False) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, headers, end_stream=end_stream)
        self.sinks[sid] = sink
        self._flush_soon()
        return sid

    async def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> bool:
        """Send as the instance's windows allow; True once all of it is on the transport,
        False when the stream can no longer be written (reset or answered by the instance)."""
        view = memoryview(data)
        while True:
            if self.closed:
                raise UpstreamLost("connection to instance closed")
            if not self._writable(sid):
                return False
            room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size, len(view))
            if room == 0 and view:
                await self._wait_window(sid)
                continue
            last = room == len(view)
            chunk = data if last and len(view) == len(data) else bytes(view[:room])
            self.h2.send_data(sid, chunk, end_stream=end_stream and last)
            self._flush_soon()
            view = view[room:]
            if self._drain is not None:
                await asyncio.shield(self._drain)
            if last:
                return True

    def send_trailers(self, sid: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.h2.send_headers(sid, headers, end_stream=True)
        self._flush_soon()

    def end_stream(self, sid: int) -> None:
        self.h2.end_stream(sid)
        self._flush_soon()

    def reset(self, sid: int, code: int = ErrorCodes.CANCEL) -> None:
        self._forget(sid)
        if self.closed:
            return
        try:
            self.h2.reset_stream(sid, code)
        except H2Error:  # already closed on the wire
            return
        self._flush_soon()

    def ack(self, sid: int, n: int) -> None:
        """Give back flow-control credit for n bytes received on `sid` (now forwarded)."""
        if n and not self.closed:
            self.h2.acknowledge_received_data(n, sid)
            self._flush_soon()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.h2.close_connection()
            self._flush()
            self.transport.close()

    # -- internals -------------------------------------------------------------------------
    def _writable(self, sid: int) -> bool:
        stream = self.h2.streams.get(sid)
        return stream is not None and stream.state_machine.state in _WRITABLE

    def _forget(self, sid: int) -> None:
        self.sinks.pop(sid, None)
        fut = self._windows.pop(sid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        if not self.sinks and self._on_idle is not None:
            self._on_idle(self)

    async def _wait_window(self, sid: int) -> None:
        fut = self._windows.get(sid)
        if fut is None:
            fut = self._windows[sid] = asyncio.get_running_loop().create_future()
        await fut

    def _wake_all(self) -> None:
        waiters, self._windows = self._windows, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_result(None)

    def _flush(self) -> None:
        self._flush_pending = False
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _flush_soon(self) -> None:
        """Frames produced by the relay go out once per loop iteration: a call's HEADERS
        and DATA, and the frames of every call started in that iteration, in one write."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _fail(self, exc: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # mark retrieved: a dead connection nobody awaited is fine
        sinks, self.sinks = self.sinks, {}
        for sink in sinks.values():
            sink.on_lost(exc)
        self._wake_all()
        self.resume_writing()
        if self.transport is not None:
            self.transport.close()
        if self._on_idle is not None:
            self._on_idle(self)


_DISPATCH = {
    ResponseReceived: H2Upstream._response,
    DataReceived: H2Upstream._data,
    TrailersReceived: H2Upstream._trailers,
    StreamReset: H2Upstream._reset,
    WindowUpdated: H2Upstream._window,
    RemoteSettingsChanged: H2Upstream._settings,
    ConnectionTerminated: H2Upstream._terminated,
}


class H2UpstreamPool:
    """h2c connections per (host, port): reuse any with a free stream slot, else dial."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        stream_window: int = 1 << 20,
        conn_window: int = 1 << 28,
        connect=None,
    ) -> None:
        # Memory is bounded by the stream window per call (calls per instance are capped by
        # the limiter); the connection window is kept far larger so that a few calls with slow
        # clients cannot stall the other calls multiplexed on the same instance connection.
        # connect(protocol_factory, host, port) -> (transport, protocol): loop.create_connection
        # by default; an in-memory transport in benchmarks
        self._connect = connect
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.stream_window = stream_window
        self.conn_window = conn_window
        self._conns: dict[tuple[str, int], list[H2Upstream]] = {}
        self._dialing: dict[tuple[str, int], asyncio.Future] = {}
        self._idle_timers: dict[H2Upstream, asyncio.TimerHandle] = {}

    async def acquire(self, host: str, port: int) -> H2Upstream:
        """A connection with room for one more stream (open it at once: no await in between)."""
        key = (host, port)
        while True:
            for conn in self._conns.get(key, ()):
                if conn.available:
                    self._touch(conn)
                    return conn
            dialing = self._dialing.get(key)
            if dialing is not None:  # share one dial among concurrent callers, then re-check
                await asyncio.shield(dialing)
                continue
            fut = self._dialing[key] = asyncio.get_running_loop().create_future()
            try:
                conn = await self._dial(key)
            except BaseException as exc:
                fut.set_result(None)
                raise UpstreamLost(f"cannot connect to instance {host}:{port}: {exc}") from exc
            else:
                self._conns.setdefault(key, []).append(conn)
                fut.set_result(None)
            finally:
                del self._dialing[key]

    async def _dial(self, key: tuple[str, int]) -> H2Upstream:
        connect = self._connect or asyncio.get_running_loop().create_connection
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await connect(lambda: H2Upstream(key, self.stream_window, self.conn_window, self._idle), *key)
            try:
                await conn.ready
            except BaseException:
                conn.close()
                raise
        return conn

    def _idle(self, conn: H2Upstream) -> None:
        if conn.closed or conn.goaway:
            self._discard(conn)
            return
        if not conn.sinks and conn not in self._idle_timers:
            self._idle_timers[conn] = asyncio.get_running_loop().call_later(self.idle_timeout, self._expire, conn)

    def _touch(self, conn: H2Upstream) -> None:
        timer = self._idle_timers.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, conn: H2Upstream) -> None:
        self._idle_timers.pop(conn, None)
        if not conn.sinks:
            self._discard(conn)
            conn.close()

    def _discard(self, conn: H2Upstream) -> None:
        self._touch(conn)
        conns = self._conns.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[conn.key]

    def connections(self, host: str, port: int) -> list[H2Upstream]:
        return list(self._conns.get((host, port), ()))

    def close(self) -> None:
        for conns in list(self._conns.values()):
            for conn in list(conns):
                self._discard(conn)
                conn.close()
