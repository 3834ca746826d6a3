"""HTTP/2 server driver over h2 (cleartext prior knowledge, or TLS with ALPN h2).

Bytes in -> h2 events -> the same protocol-neutral Exchange as HTTP/1.1 (one task
per stream running `Forwarder.handle`). Flow control is end to end: request DATA is
acknowledged (WINDOW_UPDATE) only once the forwarder consumed it, and response DATA
waits for the client's window. A protocol error gets GOAWAY with h2's error code; a
stream-level one RST_STREAM; neither disturbs other connections.

The gRPC seam. A request whose content-type starts with `application/grpc` does not
become an Exchange: it is handed to the gateway's gRPC handler (engineer D's
`proxy.grpc_relay.GrpcHandler`), which must provide
    open(headers, downstream, end_stream) -> call
with `call.on_data(data, flow_len, end_stream)`, `call.on_trailers(headers)` and
`call.on_reset(error_code)`. The `downstream` this driver passes is an H2Downstream (proxy/h2_stream.py):
`send_headers(headers, end_stream=False)`, `await send_data(data, end_stream=False)`
(returns once within the client's window), `send_trailers(headers)`,
`reset(error_code)` and `ack(n)` (flow-control credit for n request bytes). Headers
are lists of (bytes, bytes) with lower-case names, pseudo-headers included.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import h2.config
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from fngate.proxy.errors import HeadersTooLarge
from fngate.proxy.exchange import ClientGone, Headers
from fngate.proxy.grpc import Status as GrpcStatus
from fngate.proxy.grpc import trailers_only
from fngate.proxy.h2_codec import install as plain_hpack
from fngate.proxy.h2_limits import RefusingH2Connection
from fngate.proxy.h2_request import Malformed, check_trailers, read_request
from fngate.proxy.h2_stream import H2Downstream, H2Exchange

if TYPE_CHECKING:
    from fngate.proxy.config import GatewayConfig
    from fngate.proxy.forward import Forwarder

_WINDOW = 1 << 20  # per-stream receive window we advertise


class H2Server(asyncio.Protocol):
    __slots__ = (
        "_dispatch",
        "_drain",
        "_flush_pending",
        "_idle",
        "_idle_since",
        "_loop",
        "_window_waiters",
        "_write_paused",
        "client_addr",
        "closed",
        "config",
        "draining",
        "forwarder",
        "grpc",
        "h2",
        "scheme",
        "streams",
        "transport",
    )

    def __init__(self, config: GatewayConfig, forwarder: Forwarder, grpc: Any = None) -> None:
        self.config = config
        self.forwarder = forwarder
        self.grpc = grpc
        self.transport: asyncio.Transport | None = None
        self.h2 = plain_hpack(
            RefusingH2Connection(
                h2.config.H2Configuration(
                    # inbound fields are checked by proxy.h2_request (h2's check costs ~10x more)
                    client_side=False,
                    header_encoding=None,
                    validate_inbound_headers=False,
                    normalize_inbound_headers=False,
                    # what we send was parsed and lower-cased already (httptools / our own headers)
                    validate_outbound_headers=False,
                    normalize_outbound_headers=False,
                )
            )
        )
        self.client_addr = ""
        self.scheme = b"http"
        self._flush_pending = False
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.streams: dict[int, Any] = {}  # stream id -> H2Exchange or gRPC call
        self.closed = False
        self._window_waiters: dict[int, asyncio.Future] = {}
        self._write_paused = False
        self._drain: asyncio.Future | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        E = h2.events
        self._dispatch = {
            E.RequestReceived: self._on_request,
            E.DataReceived: self._on_data,
            E.TrailersReceived: self._on_trailers,
            E.StreamReset: self._on_reset,
            E.WindowUpdated: self._on_window,
            E.RemoteSettingsChanged: self._on_window,
            E.ConnectionTerminated: self._on_terminated,
        }

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.forwarder.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client_addr = peer[0] if peer else ""
        if transport.get_extra_info("ssl_object") is not None:
            self.scheme = b"https"
        s = h2.settings.SettingCodes
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                s.MAX_CONCURRENT_STREAMS: self.config.h2_max_concurrent_streams,
                s.INITIAL_WINDOW_SIZE: _WINDOW,
                s.MAX_HEADER_LIST_SIZE: self.config.max_header_bytes,
            },
        )
        self.h2.allow_header_decoding(self.config.max_header_bytes)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_WINDOW * 4)
        self._flush()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", None) or ErrorCodes.PROTOCOL_ERROR
            try:
                self.h2.close_connection(error_code=code)
            except h2.exceptions.ProtocolError:
                pass
            self._flush()
            self.close()
            return
        dispatch = self._dispatch
        for ev in events:
            handler = dispatch.get(type(ev))
            if handler is not None:
                handler(ev)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.forwarder.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        for s in list(self.streams.values()):
            self._gone(s)
        self.streams.clear()
        for w in self._window_waiters.values():
            if not w.done():
                w.set_exception(ClientGone())
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ClientGone())

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        d = self._drain
        if d is not None:
            self._drain = None
            if not d.done():
                d.set_result(None)

    # -- events -------------------------------------------------------------------------
    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        ended = ev.stream_ended is not None
        try:
            method, target, authority, grpc, headers, size = read_request(ev.headers)
        except Malformed:
            self._malformed(sid)
            return
        if size > self.config.max_header_bytes:
            self._refuse_oversized(sid, grpc, ended)
            return
        if grpc and self.grpc is not None:
            self.streams[sid] = self.grpc.open(ev.headers, H2Downstream(self, sid), ended)
            return
        ex = H2Exchange(self, sid, method.decode("ascii", "replace"), target, headers, authority, ended)
        self.streams[sid] = ex
        if ended:  # a request without a body: the forwarder may answer it without a task
            self.forwarder.start(ex)
        else:
            ex.spawn(self.forwarder.handle(ex))

    def _malformed(self, sid: int) -> None:
        """A stream whose headers or trailers break RFC 9113 8.2/8.3: a stream error
        (RST_STREAM PROTOCOL_ERROR, 8.1.1); whoever serves it sees the client go."""
        s = self.streams.get(sid)
        self.reset(sid, ErrorCodes.PROTOCOL_ERROR)
        if isinstance(s, H2Exchange):
            s.client_gone()
        elif s is not None:
            s.on_reset(ErrorCodes.PROTOCOL_ERROR)

    def _refuse_oversized(self, sid: int, grpc: bool, ended: bool) -> None:
        """Answer one stream whose headers exceed the advertised limit: 431, or for gRPC
        a trailers-only RESOURCE_EXHAUSTED; the connection's other streams go on."""
        err = HeadersTooLarge(f"Request headers exceed {self.config.max_header_bytes} bytes")
        try:
            if grpc:
                self.h2.send_headers(sid, trailers_only(GrpcStatus.RESOURCE_EXHAUSTED, err.detail), end_stream=True)
            else:
                ctype, body = err.body()
                self.h2.send_headers(sid, [(b":status", b"431"), (b"content-type", ctype), (b"content-length", b"%d" % len(body))])
                self.h2.send_data(sid, body, end_stream=True)
            if not ended:  # the client may still be sending: tell it to stop (RFC 9113 8.1)
                self.h2.reset_stream(sid, ErrorCodes.NO_ERROR)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self._flush_soon()

    async def _run(self, ex: H2Exchange, coro) -> None:
        try:
            await coro
        finally:
            if ex.body.eof or ex.body.error is not None:
                self._forget(ex.sid)

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        s = self.streams.get(ev.stream_id)
        ended = ev.stream_ended is not None
        if isinstance(s, H2Exchange):
            pad = ev.flow_controlled_length - len(ev.data)
            if pad:
                self.ack(ev.stream_id, pad)
            if ev.data:
                s.body.feed(ev.data)
            if ended:
                s.body.feed_eof()
                if s.finished:
                    self._forget(ev.stream_id)
        elif s is not None:
            s.on_data(ev.data, ev.flow_controlled_length, ended)
            if ended:
                self._maybe_forget(ev.stream_id)
        else:
            self.ack(ev.stream_id, ev.flow_controlled_length)

    def _on_trailers(self, ev: h2.events.TrailersReceived) -> None:
        try:
            check_trailers(ev.headers)
        except Malformed:
            self._malformed(ev.stream_id)
            return
        s = self.streams.get(ev.stream_id)
        if isinstance(s, H2Exchange):
            s.body.feed_eof()  # request trailers are not forwarded to HTTP/1.1 instances
        elif s is not None:
            s.on_trailers(ev.headers)
            self._maybe_forget(ev.stream_id)

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        s = self.streams.pop(ev.stream_id, None)
        w = self._window_waiters.pop(ev.stream_id, None)
        if w is not None and not w.done():
            w.set_exception(ClientGone())
        if isinstance(s, H2Exchange):
            s.client_gone()
        elif s is not None:
            s.on_reset(ev.error_code)

    def _on_window(self, ev: Any) -> None:
        waiters = self._window_waiters
        if not waiters:
            return
        sid = getattr(ev, "stream_id", 0)
        if sid:
            w = waiters.pop(sid, None)
            if w is not None and not w.done():
                w.set_result(None)
        else:
            self._window_waiters = {}
            for w in waiters.values():
                if not w.done():
                    w.set_result(None)

    def _on_terminated(self, ev: h2.events.ConnectionTerminated) -> None:
        self.close()

    # -- used by exchanges and the gRPC relay ---------------------------------------------
    def send_headers(self, sid: int, headers: Headers, end_stream: bool) -> None:
        if self.closed:
            raise ClientGone()
        try:
            self.h2.send_headers(sid, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise ClientGone() from None
        self._flush_soon()
        if end_stream:
            self._maybe_forget(sid)

    async def send_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        h2c = self.h2
        view = memoryview(data)
        while True:
            if self.closed:
                raise ClientGone()
            try:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
            except h2.exceptions.StreamClosedError:
                raise ClientGone() from None
            if window <= 0 and view:
                w = self._window_waiters.get(sid)
                if w is None:
                    w = self._window_waiters[sid] = asyncio.get_running_loop().create_future()
                await w
                continue
            chunk, view = view[:window], view[window:]
            try:
                h2c.send_data(sid, bytes(chunk), end_stream=end_stream and not view)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                raise ClientGone() from None
            self._flush_soon()
            if self._write_paused:
                if self._drain is None:
                    self._drain = asyncio.get_running_loop().create_future()
                await self._drain
            if not view:
                break
        if end_stream:
            self._maybe_forget(sid)

    def send_data_nowait(self, sid: int, data: bytes) -> bool:
        """Send `data` and end the stream now if the windows allow it (small answers)."""
        h2c = self.h2
        try:
            if len(data) > min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size):
                return False
            h2c.send_data(sid, data, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return True  # the stream is gone: nothing left to send
        self._flush_soon()
        self._maybe_forget(sid)
        return True

    def end_stream(self, sid: int) -> None:
        try:
            self.h2.end_stream(sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush_soon()
        self._maybe_forget(sid)

    def reset(self, sid: int, code: int) -> None:
        self.streams.pop(sid, None)
        w = self._window_waiters.pop(sid, None)
        if w is not None and not w.done():
            w.set_exception(ClientGone())
        if self.closed:
            return
        try:
            self.h2.reset_stream(sid, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush_soon()
        self._arm_idle()

    def ack(self, sid: int, n: int) -> None:
        if n <= 0 or self.closed:
            return
        try:
            self.h2.acknowledge_received_data(n, sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            try:  # the stream is gone; still return the connection-level credit
                self.h2.increment_flow_control_window(n)
            except h2.exceptions.ProtocolError:
                return
        self._flush_soon()

    # -- housekeeping ---------------------------------------------------------------------
    def _maybe_forget(self, sid: int) -> None:
        s = self.streams.get(sid)
        if isinstance(s, H2Exchange):
            if s.body.eof or s.body.error is not None:
                self._forget(sid)
        elif s is not None:  # a gRPC call: forget it once its stream is closed both ways
            st = self.h2.streams.get(sid)
            if st is None or st.closed:
                self._forget(sid)

    def _forget(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self._window_waiters.pop(sid, None)
        if self.draining and not self.streams:
            self._idle_close()
        else:
            self._arm_idle()

    def shutdown(self) -> None:
        """Graceful stop: streams in progress finish, then GOAWAY and close. (h2 cannot send
        a GOAWAY and keep serving open streams, so the GOAWAY waits for them.)"""
        self.draining = True
        if not self.streams:
            self._idle_close()

    def _gone(self, s: Any) -> None:
        if isinstance(s, H2Exchange):
            if not s.finished:
                s.client_gone()
        else:
            s.on_reset(ErrorCodes.CANCEL)

    def _arm_idle(self) -> None:
        """The connection has no stream from now on: close it after keepalive_timeout.
        One timer per idle spell, not one per stream: the timer checks when it fires."""
        if self.streams or self.closed:
            return
        self._idle_since = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_at(self._idle_since + self.config.keepalive_timeout, self._idle_due)

    def _idle_due(self) -> None:
        self._idle = None
        if self.streams or self.closed:
            return  # busy again: the last stream to end arms a new timer
        due = self._idle_since + self.config.keepalive_timeout
        if self._loop.time() < due:
            self._idle = self._loop.call_at(due, self._idle_due)
        else:
            self._idle_close()

    def _idle_close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if not self.streams and not self.closed:
            self.h2.close_connection()
            self._flush()
            self.close()

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def _flush_soon(self) -> None:
        """Frames produced outside data_received (by exchange tasks) go out once per loop
        iteration: a response's HEADERS and DATA, and many streams' frames, in one write."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
