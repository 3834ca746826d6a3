"""Raw HTTP/2 peers for what gRPC libraries will not do: send malformed gRPC framing,
read exact RST_STREAM codes, record request headers, reset streams on purpose."""

from __future__ import annotations

import asyncio
import struct

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, ResponseReceived, StreamEnded, StreamReset, TrailersReceived
from h2.settings import SettingCodes, Settings


def grpc_frame(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(message)) + message


def grpc_headers(path: str, authority: str = "gateway", extra=()) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


class StreamResult:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.data = bytearray()
        self.reset_code: int | None = None
        self.done = asyncio.get_running_loop().create_future()

    @property
    def grpc_status(self) -> int | None:
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if value is None else int(value)


class _LimitIgnoringConnection(H2Connection):
    """Opens streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS (a misbehaving client)."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


class RawClient:
    """An h2c client connection driven by hand."""

    def __init__(self, reader, writer, ignore_stream_limit: bool = False) -> None:
        self.reader, self.writer = reader, writer
        cls = _LimitIgnoringConnection if ignore_stream_limit else H2Connection
        self.h2 = cls(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.streams: dict[int, StreamResult] = {}
        self.closed = asyncio.get_running_loop().create_future()
        self.h2.initiate_connection()
        self.flush()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, port: int, ignore_stream_limit: bool = False, settle: bool = True) -> RawClient:
        """settle=False: the first streams go out before the server's SETTINGS are acknowledged."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, ignore_stream_limit)
        if settle:
            await asyncio.sleep(0.05)  # let the server's SETTINGS arrive
        return client

    def send(self, result: StreamResult, data: bytes, end: bool = True) -> None:
        self.h2.send_data(result.stream_id, data, end_stream=end)
        self.flush()

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def start(self, headers, body: bytes | None = None, end: bool = True) -> StreamResult:
        sid = self.h2.get_next_available_stream_id()
        result = self.streams[sid] = StreamResult()
        self.h2.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()
        result.stream_id = sid
        return result

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for ev in self.h2.receive_data(data):
                    s = self.streams.get(getattr(ev, "stream_id", 0))
                    if s is None:
                        continue
                    if isinstance(ev, ResponseReceived):
                        s.headers.update(ev.headers)
                    elif isinstance(ev, TrailersReceived):
                        s.trailers.update(ev.headers)
                    elif isinstance(ev, DataReceived):
                        s.data += ev.data
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, StreamEnded) and not s.done.done():
                        s.done.set_result(None)
                    elif isinstance(ev, StreamReset):
                        s.reset_code = ev.error_code
                        if not s.done.done():
                            s.done.set_result(None)
                self.flush()
        finally:
            if not self.closed.done():
                self.closed.set_result(None)

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()


class RawUpstream:
    """An h2c 'instance' that records request headers and answers each stream by `behaviour`:
    "reset:<code>" resets the stream, "slow" answers OK after 0.3 s, anything else answers
    OK at once. `max_streams` is the SETTINGS_MAX_CONCURRENT_STREAMS it advertises."""

    def __init__(self, behaviour: str, max_streams: int = 100) -> None:
        self.behaviour = behaviour
        self.max_streams = max_streams
        self.connections = 0
        self.requests: list[dict[str, str]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        h2.local_settings = Settings(client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        h2.initiate_connection()
        writer.write(h2.data_to_send())

        def answer(sid: int) -> None:
            h2.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            h2.send_data(sid, grpc_frame(b""))
            h2.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            writer.write(h2.data_to_send())

        try:
            while data := await reader.read(65536):
                for ev in h2.receive_data(data):
                    if isinstance(ev, RequestReceived):
                        self.requests.append(dict(ev.headers))
                        if self.behaviour.startswith("reset:"):
                            h2.reset_stream(ev.stream_id, int(self.behaviour.split(":")[1]))
                        elif self.behaviour == "slow":
                            asyncio.get_running_loop().call_later(0.3, answer, ev.stream_id)
                        else:
                            answer(ev.stream_id)
                    elif isinstance(ev, DataReceived):
                        h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                writer.write(h2.data_to_send())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
