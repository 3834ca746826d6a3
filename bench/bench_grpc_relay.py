"""Micro benchmark of the gRPC frame relay (pytest-benchmark), without sockets.

    .venv/bin/python -m pytest bench/bench_grpc_relay.py --benchmark-only

The relay (proxy/grpc/relay.py) runs with its real upstream HTTP/2 client
(proxy/instances/h2.py) against an in-memory ngh2 instance, and an in-memory
client side, so the numbers are the gateway's own per-call and per-frame cost:
routing and auth on the snapshot, admission, header rewriting, the relay callbacks, HTTP/2
framing towards the instance, flow-control acknowledgements.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from ngh2 import Configuration, Connection, Role, Setting
from ngh2.events import DataReceived, RequestReceived

from fngate.proxy.grpc.protocol import MessageFraming
from fngate.proxy.grpc.relay import GrpcHandler
from fngate.proxy.instances.h2 import H2UpstreamPool
from fngate.proxy.routing.lookup import KeyChecker
from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, RoutingTable, SnapshotHolder, VersionRoute, key_digest

FID = "50000000-0000-4000-8000-000000000001"
VID = "60000000-0000-4000-8000-000000000001"
FRAME = 16 * 1024


class _Transport(asyncio.Transport):
    """Bytes written by the gateway's upstream connection go straight into the peer."""

    def __init__(self, peer: _Peer) -> None:
        super().__init__()
        self.peer = peer

    def write(self, data) -> None:
        self.peer.feed(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name, default=None):
        return default

    def close(self) -> None:
        pass


class _Peer:
    """One in-memory connection of the instance: answers each call with `frames` DATA
    frames of the request's size (one frame = the request echoed)."""

    def __init__(self, frames: int, protocol) -> None:
        self.h2 = Connection(Role.SERVER, Configuration(auto_window_update=False))
        self.h2.initiate_connection({Setting.MAX_CONCURRENT_STREAMS: 1000})
        self.frames = frames
        self.bodies: dict[int, bytearray] = {}
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()

    def feed(self, data: bytes) -> None:
        self.h2.receive_data(data)
        for ev in self.h2.events():
            ended, sid = False, 0
            if isinstance(ev, RequestReceived):
                sid = ev.stream_id
                self.bodies[ev.stream_id] = bytearray()
                ended = ev.end_stream
            elif isinstance(ev, DataReceived):
                sid = ev.stream_id
                self.bodies[ev.stream_id] += ev.data
                if ev.data:
                    self.h2.acknowledge_received_data(len(ev.data), ev.stream_id)
                ended = ev.end_stream
            if ended:
                body = bytes(self.bodies.pop(sid))
                self.h2.send_response(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                for _ in range(self.frames):
                    self.h2.send_data(sid, body)
                self.h2.send_trailers(sid, [(b"grpc-status", b"0")])
        out = self.h2.data_to_send()
        if out:
            self.loop.call_soon(self.protocol.data_received, out)


class _Instance:
    """An in-memory gRPC instance at the HTTP/2 level, dialled through the pool's connect seam."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    async def connect(self, factory, host, port):
        protocol = factory()
        transport = _Transport(_Peer(self.frames, protocol))
        protocol.connection_made(transport)
        return transport, protocol


class _Client:
    """The client side of one stream: counts what the relay sends back."""

    __slots__ = ("bytes", "done")

    http2 = True
    conn = None

    def __init__(self) -> None:
        self.bytes = 0
        self.done = asyncio.get_running_loop().create_future()

    def send_headers(self, headers, end_stream=False):
        if end_stream:
            self.done.set_result(None)

    def queue_data(self, data, end_stream=False):
        self.bytes += len(data)
        return True

    def backlogged(self):
        return False

    def when_writable(self, callback):
        asyncio.get_running_loop().call_soon(callback)

    def send_trailers(self, headers):
        self.done.set_result(None)

    def reset(self, code):
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"reset {code}"))

    def stop_after_answer(self):
        pass

    def ack(self, n):
        pass


class _Lease:
    __slots__ = ("endpoint",)

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint

    def release(self) -> None:
        pass


class _Slots:
    """Every call gets a slot at once (the limiter is not what this measures)."""

    def try_acquire(self, route, exclude=None, owner=None):
        return _Lease(route.endpoints[0])

    async def admit(self, route, deadline, request_id="", exclude=None, *, owner=None, pin=None):
        return _Lease(route.endpoints[0])


def _handler(frames: int) -> GrpcHandler:
    endpoint = Endpoint("mem-1", "instance.local", 1)
    route = VersionRoute(FID, VID, "bench", "ACTIVE", grpc=True, max_concurrency=1000, endpoints=(endpoint,))
    holder = SnapshotHolder()
    holder.publish(RoutingTable.build(1, [route], [(key_digest("bench-key"), KeyGrant("k", frozenset({"invoke_function"})))]))
    instance = _Instance(frames)

    return GrpcHandler(holder, _Slots(), KeyChecker(), H2UpstreamPool(connect=instance.connect))


HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/fngate.echo.v1.Echo/Echo"),
    (b":authority", b"gateway"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"function-id", FID.encode()),
    (b"authorization", b"Bearer bench-key"),
    (b"grpc-timeout", b"10S"),
]


def _message(size: int) -> bytes:
    return b"\x00" + struct.pack(">I", size - 5) + b"m" * (size - 5)


async def _calls(handler: GrpcHandler, n: int, message: bytes) -> int:
    clients = []
    for _ in range(n):
        client = _Client()
        call = handler.open(HEADERS, client)
        call.on_data(message, len(message), True)
        clients.append(client)
    await asyncio.gather(*(c.done for c in clients))
    return sum(c.bytes for c in clients)


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.parametrize("concurrent", [1, 100])
def test_unary_calls_through_the_relay(benchmark, loop, concurrent):
    """Small unary calls (100-byte message each way); `concurrent` calls per round."""
    handler = _handler(frames=1)
    message = _message(100)
    assert loop.run_until_complete(_calls(handler, concurrent, message)) == 100 * concurrent
    benchmark(lambda: loop.run_until_complete(_calls(handler, concurrent, message)))
    loop.run_until_complete(handler.aclose())


def test_streamed_frames_through_the_relay(benchmark, loop):
    """One call streaming 64 DATA frames of 16 KiB back (1 MiB per round)."""
    handler = _handler(frames=64)
    message = _message(FRAME)
    assert loop.run_until_complete(_calls(handler, 1, message)) == 64 * FRAME
    benchmark(lambda: loop.run_until_complete(_calls(handler, 1, message)))
    loop.run_until_complete(handler.aclose())


def test_message_prefix_tracking(benchmark):
    """MessageFraming over 1 MiB of 16 KiB DATA frames carrying 4 KiB messages."""
    stream = _message(4096) * 256
    frames = [stream[i : i + FRAME] for i in range(0, len(stream), FRAME)]

    def run():
        framing = MessageFraming(1 << 30)
        for frame in frames:
            framing.feed(frame)
        return framing.at_boundary()

    assert benchmark(run)
