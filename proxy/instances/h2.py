"""Upstream HTTP/2 cleartext (h2c) connections to instances, multiplexed and reused.

One H2Upstream is one TCP connection to an instance carrying many concurrent streams.
H2UpstreamPool keeps them per endpoint and opens another connection only when every
existing one has reached the peer's SETTINGS_MAX_CONCURRENT_STREAMS.

Each stream reports to a sink (the relay) through plain method calls, in the order
the frames arrived. Flow control is end to end: received DATA is acknowledged to the
instance only when the sink calls `ack()` (after it forwarded the bytes), and a sender
queues DATA with `queue_data()` and, while the stream is `backlogged()` (the instance's
windows or the socket hold it back), waits for `when_writable()` before it takes more
from its own client, so neither side can fill the gateway. No call here awaits.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from ngh2 import ErrorCode, Setting
from ngh2 import events as ev

from fngate.proxy.wire.h2_engine import client_connection
from fngate.proxy.wire.stream_flow import GONE as _GONE
from fngate.proxy.wire.stream_flow import StreamFlow


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
        "_flush_pending",
        "_loop",
        "_max_streams",
        "_on_idle",
        "_stream_window",
        "closed",
        "goaway",
        "h2",
        "key",
        "out",
        "ready",
        "sinks",
        "transport",
    )

    def __init__(
        self, key: tuple[str, int], stream_window: int, conn_window: int, on_idle: Callable[[H2Upstream], None] | None = None
    ) -> None:
        self.key = key
        self.h2 = client_connection()
        self.transport: asyncio.Transport | None = None
        self.sinks: dict[int, StreamSink] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # set on the peer's first SETTINGS
        self.closed = False
        self.goaway = False
        self._loop = asyncio.get_running_loop()
        self.out = StreamFlow(self.h2, self._loop, soon=True)  # request bytes queued per stream, and their senders
        self._stream_window = stream_window
        self._conn_window = conn_window
        self._on_idle = on_idle
        self._flush_pending = False
        self._max_streams = 100  # until the instance's SETTINGS say otherwise

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2.initiate_connection({Setting.INITIAL_WINDOW_SIZE: self._stream_window, Setting.ENABLE_PUSH: 0})
        self.h2.set_local_window_size(self._conn_window)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.h2.receive_data(data)
        except Exception as exc:
            self._fail(UpstreamLost(f"HTTP/2 protocol error from instance: {exc}"))
            return
        self._dispatch(self.h2.events())
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(UpstreamLost(f"connection to instance lost: {exc or 'closed by peer'}"))

    def pause_writing(self) -> None:
        self.out.flow.pause_writing()

    def resume_writing(self) -> None:
        flow = self.out.flow
        flow.paused = False
        self._flush()
        flow.resume_writing()

    # -- events ----------------------------------------------------------------------------
    def _dispatch(self, events: list[ev.Event]) -> None:
        for e in events:
            t = type(e)
            if t is ev.DataReceived:
                self._data(e)  # type: ignore[arg-type]
            elif t is ev.ResponseReceived:
                self._response(e)  # type: ignore[arg-type]
            elif t is ev.TrailersReceived:
                self._trailers(e)  # type: ignore[arg-type]
            elif t is ev.StreamReset or t is ev.StreamClosed:
                self._reset(e.stream_id, e.error_code)  # type: ignore[attr-defined]
            elif t is ev.SettingsReceived:
                self._settings()
            elif t is ev.GoAwayReceived:
                self._terminated(e)  # type: ignore[arg-type]
            elif t is ev.ConnectionClosed:
                self._fail(UpstreamLost("the instance closed the HTTP/2 connection"))

    def _response(self, e: ev.ResponseReceived) -> None:
        sink = self.sinks.get(e.stream_id)
        if sink is not None:
            if e.end_stream:
                self._forget(e.stream_id)
            sink.on_response(list(e.headers), e.end_stream)

    def _data(self, e: ev.DataReceived) -> None:
        sid = e.stream_id
        sink = self.sinks.get(sid)
        n = len(e.data)
        if sink is None:  # stream already reset by us: give the credit straight back
            self.ack(sid, n)
            return
        if e.end_stream:
            self._forget(sid)
        sink.on_data(e.data, n, e.end_stream)

    def _trailers(self, e: ev.TrailersReceived) -> None:
        sink = self.sinks.get(e.stream_id)
        if sink is not None:
            self._forget(e.stream_id)
            sink.on_trailers(list(e.headers))

    def _reset(self, sid: int, code: int) -> None:
        sink = self.sinks.get(sid)
        if sink is not None:
            self._forget(sid)
            sink.on_reset(code or ErrorCode.CANCEL)

    def _settings(self) -> None:
        self._max_streams = self.h2.remote_settings.get(Setting.MAX_CONCURRENT_STREAMS, 100)
        if not self.ready.done():
            self.ready.set_result(None)

    def _terminated(self, e: ev.GoAwayReceived) -> None:
        self.goaway = True
        last = e.last_stream_id
        for sid in [s for s in self.sinks if s > last]:  # never processed: safe to report lost
            self.sinks.pop(sid).on_lost(UpstreamLost(f"instance sent GOAWAY ({ErrorCode(e.error_code).name})"))
        if not self.sinks and self.transport is not None:
            self.transport.close()

    # -- streams ---------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return not self.closed and not self.goaway and len(self.sinks) < self._max_streams

    def open_stream(self, headers: Sequence[tuple[bytes, bytes]], sink: StreamSink, end_stream: bool = False) -> int:
        sid = self.h2.send_request(headers, end_stream=end_stream)
        self.sinks[sid] = sink
        self._flush_soon()
        return sid

    def queue_data(self, sid: int, data: bytes, end_stream: bool = False) -> bool:
        """Queue `data` in the engine (framed as the instance's windows allow); False when
        the stream can no longer be written (reset, answered, or the connection is gone).
        True does not mean the instance takes more: see `backlogged`."""
        if self.closed or sid not in self.sinks or not self.out.queue(sid, data, end_stream):
            return False
        self._flush_soon()
        return True

    def backlogged(self, sid: int) -> bool:
        """The instance is not taking this stream's bytes (windows closed or socket full)."""
        if self.closed or sid not in self.sinks:
            return False
        return self.out.backlogged(sid)

    def when_writable(self, sid: int, callback: Callable[[], None]) -> None:
        """Call `callback` (from the loop, never from inside this call) once the stream
        may take more, or is gone."""
        if self.closed or sid not in self.sinks:
            self._loop.call_soon(callback)
        else:
            self.out.when_writable(sid, callback)

    def send_trailers(self, sid: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        try:
            self.h2.send_trailers(sid, headers)
        except _GONE:
            return
        self._flush_soon()

    def end_stream(self, sid: int) -> None:
        try:
            self.h2.end_stream(sid)
        except _GONE:
            return
        self._flush_soon()

    def reset(self, sid: int, code: int = ErrorCode.CANCEL) -> None:
        self._forget(sid)
        if self.closed:
            return
        try:
            self.h2.reset_stream(sid, code)
        except _GONE:  # already closed on the wire
            return
        self._flush_soon()

    def ack(self, sid: int, n: int) -> None:
        """Give back flow-control credit for n bytes received on `sid` (now forwarded)."""
        if n and not self.closed:
            try:
                self.h2.acknowledge_received_data(n, sid)
            except _GONE:
                return
            self._flush_soon()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            try:
                self.h2.send_goaway(ErrorCode.NO_ERROR)
            except _GONE:
                pass
            self._flush()
            self.transport.close()

    # -- internals -------------------------------------------------------------------------
    def _forget(self, sid: int) -> None:
        self.sinks.pop(sid, None)
        self.out.wake(sid)
        if not self.sinks and self._on_idle is not None:
            self._on_idle(self)

    def _flush(self) -> None:
        self._flush_pending = False
        if self.closed or self.out.flow.paused:
            return  # resume_writing flushes
        try:
            out = self.h2.data_to_send()
        except _GONE as exc:
            self._fail(UpstreamLost(f"HTTP/2 engine failed: {exc}"))
            return
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)
        events = self.h2.events()
        if events:
            self._dispatch(events)
        if self.out.waiting:
            self.out.wake_ready()

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
        self.out.wake_all()
        if self.transport is not None:
            self.transport.close()
        if self._on_idle is not None:
            self._on_idle(self)


# connect(protocol_factory, host, port) -> (transport, protocol), as loop.create_connection
Connect = Callable[[Callable[[], H2Upstream], str, int], Awaitable[tuple[asyncio.BaseTransport, H2Upstream]]]


class H2UpstreamPool:
    """h2c connections per (host, port): reuse any with a free stream slot, else dial."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        stream_window: int = 1 << 20,
        conn_window: int = 1 << 28,
        connect: Connect | None = None,
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
        self._dialing: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._idle_timers: dict[H2Upstream, asyncio.TimerHandle] = {}

    def take(self, host: str, port: int) -> H2Upstream | None:
        """An open connection with room for one more stream, or None (then `acquire`)."""
        for conn in self._conns.get((host, port), ()):
            if conn.available:
                self._touch(conn)
                return conn
        return None

    take_idle = take  # the name the call's admission path uses (proxy/calls/call.Routed), as for H1Pool

    async def acquire(self, host: str, port: int) -> H2Upstream:
        """A connection with room for one more stream (open it at once: no await in between)."""
        key = (host, port)
        while True:
            conn = self.take(host, port)
            if conn is not None:
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
