"""The relay's callbacks, frame by frame, with no socket: the real GrpcHandler, Limiter,
KeyChecker and upstream HTTP/2 client (ngh2) against an in-memory ngh2 instance that
the test answers by hand, and a recording client side. For the orders of events that
real clients and servers produce only by chance: request trailers before the instance
stream opens, an instance that answers before the request ended, a client that stops
reading, a client gone at each step, odd statuses."""

from __future__ import annotations

import asyncio

import pytest
from ngh2 import Configuration, Connection, ErrorCode, Role, Setting
from ngh2 import events as ev

from fngate.proxy.calls.exchange import ClientGone
from fngate.proxy.calls.metrics import Metrics
from fngate.proxy.grpc.protocol import Status
from fngate.proxy.grpc.relay import GrpcHandler
from fngate.proxy.instances.h2 import H2UpstreamPool
from fngate.proxy.routing.limiter import Limiter
from fngate.proxy.routing.lookup import KeyChecker
from fngate.proxy.routing.snapshot import Endpoint, KeyGrant, RoutingTable, SnapshotHolder, VersionRoute, key_digest
from tests.proxy.grpc.rawh2 import grpc_frame

FID = "70000000-0000-4000-8000-000000000001"
VID = "80000000-0000-4000-8000-000000000001"
MESSAGE = grpc_frame(b"hello")
HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/fngate.echo.v1.Echo/Echo"),
    (b":authority", b"gateway"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"function-id", FID.encode()),
    (b"authorization", b"Bearer relay-key"),
]
OK = [(b":status", b"200"), (b"content-type", b"application/grpc")]


class _Transport(asyncio.Transport):
    def __init__(self, peer: Instance) -> None:
        super().__init__()
        self.peer = peer
        self.closed = False

    def write(self, data) -> None:
        self.peer.feed(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return default

    def close(self) -> None:
        self.closed = True


class Instance:
    """One in-memory h2c connection of an instance; the test answers each stream."""

    def __init__(self) -> None:
        self.h2 = Connection(Role.SERVER, Configuration(auto_window_update=False))
        self.h2.initiate_connection({Setting.MAX_CONCURRENT_STREAMS: 100})
        self.protocol = None
        self.requests: dict[int, dict] = {}
        self.reading = True  # False: received DATA is not acknowledged (the instance's windows close)
        self.unacked: dict[int, int] = {}

    async def connect(self, factory, host, port):
        self.protocol = factory()
        self.protocol.connection_made(_Transport(self))
        self.flush()
        return self.protocol.transport, self.protocol

    def feed(self, data: bytes) -> None:
        self.h2.receive_data(data)
        for e in self.h2.events():
            sid = getattr(e, "stream_id", 0)
            if isinstance(e, ev.RequestReceived):
                self.requests[sid] = {"headers": dict(e.headers), "data": b"", "ended": e.end_stream, "trailers": None, "reset": None}
            elif isinstance(e, ev.DataReceived) and sid in self.requests:
                self.requests[sid]["data"] += e.data
                self.requests[sid]["ended"] = e.end_stream
                if e.data and self.reading:
                    self.h2.acknowledge_received_data(len(e.data), sid)
                elif e.data:
                    self.unacked[sid] = self.unacked.get(sid, 0) + len(e.data)
            elif isinstance(e, ev.TrailersReceived):
                self.requests[sid]["trailers"] = dict(e.headers)
                self.requests[sid]["ended"] = True
            elif isinstance(e, ev.StreamReset | ev.StreamClosed) and sid in self.requests:
                self.requests[sid]["reset"] = self.requests[sid]["reset"] or e.error_code
        self.flush()

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.data_received, out)

    async def until(self, predicate) -> None:
        async with asyncio.timeout(5):
            while not predicate():
                await asyncio.sleep(0.001)

    def read_again(self) -> None:
        self.reading = True
        for sid, n in self.unacked.items():
            self.h2.acknowledge_received_data(n, sid)
        self.unacked.clear()
        self.flush()

    def stream(self) -> int:
        return max(self.requests)

    def answer(self, sid: int, headers=OK, data: bytes | None = None, trailers=None, end_with_data: bool = False) -> None:
        h2 = self.h2
        h2.send_response(sid, headers, end_stream=data is None and trailers is None and not end_with_data)
        if data is not None:
            h2.send_data(sid, data, end_stream=end_with_data)
        if trailers is not None:
            h2.send_trailers(sid, trailers)
        self.flush()

    def reset(self, sid: int, code: int) -> None:
        self.h2.reset_stream(sid, code)
        self.flush()


class Client:
    """The client side of one stream (what H2Downstream gives the relay), recording."""

    http2 = True

    def __init__(self, conn: object = "client-connection") -> None:
        self.conn = conn
        self.headers: list | None = None
        self.data = b""
        self.trailers: list | None = None
        self.reset_code: int | None = None
        self.stopped = False
        self.acked = 0
        self.gone = False  # the client went away: sends fail
        self.slow = False  # the client takes nothing: backlogged
        self.waiting: list = []

    def send_headers(self, headers, end_stream=False) -> None:
        if self.gone:
            raise ClientGone()
        self.headers = list(headers)

    def queue_data(self, data, end_stream=False) -> bool:
        if self.gone:
            return False
        self.data += data
        return True

    def backlogged(self) -> bool:
        return self.slow

    def when_writable(self, callback) -> None:
        self.waiting.append(callback)

    def writable(self) -> None:
        waiting, self.waiting = self.waiting, []
        for cb in waiting:
            cb()

    def send_trailers(self, headers) -> None:
        if self.gone:
            raise ClientGone()
        self.trailers = list(headers)

    def reset(self, code) -> None:
        self.reset_code = code

    def stop_after_answer(self) -> None:
        self.stopped = True

    def ack(self, n) -> None:
        self.acked += n

    def header(self, name: bytes) -> bytes | None:
        for n, v in (self.headers or []) + (self.trailers or []):
            if n == name:
                return v
        return None


@pytest.fixture
async def relay():
    holder = SnapshotHolder()
    route = VersionRoute(FID, VID, "relay", "ACTIVE", grpc=True, max_concurrency=10, endpoints=(Endpoint("mem-1", "instance.mem", 1),))
    holder.publish(RoutingTable.build(1, [route], [(key_digest("relay-key"), KeyGrant("k", frozenset({"invoke_function"})))]))
    instance = Instance()
    metrics = Metrics()
    handler = GrpcHandler(
        holder, Limiter(holder, per_connection=4), KeyChecker(), H2UpstreamPool(connect=instance.connect), request_metrics=metrics
    )
    handler.instance = instance
    handler.metrics_seen = metrics
    yield handler
    await handler.aclose()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def opened(relay, client: Client, end: bool = False):
    call = relay.open(HEADERS, client, end)
    return call


async def test_request_trailers_before_and_after_the_instance_stream_opens(relay):
    instance = relay.instance
    early = Client()
    call = await opened(relay, early)
    call.on_data(MESSAGE, len(MESSAGE), False)
    call.on_trailers([(b"x-before", b"1")])  # all before the call started: kept until the stream opens
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["trailers"])
    sid = instance.stream()
    assert instance.requests[sid]["data"] == MESSAGE and instance.requests[sid]["trailers"] == {b"x-before": b"1"}
    instance.answer(sid, data=MESSAGE, trailers=[(b"grpc-status", b"0")])
    await settle()
    assert early.header(b"grpc-status") == b"0" and early.data == MESSAGE and early.acked == len(MESSAGE)

    late = Client()
    call = await opened(relay, late)
    call.on_data(MESSAGE, len(MESSAGE), False)
    await instance.until(lambda: instance.stream() != sid and instance.requests[instance.stream()]["data"])
    call.on_trailers([(b"x-after", b"2")])
    await instance.until(lambda: instance.requests[instance.stream()]["trailers"])
    assert instance.requests[instance.stream()]["trailers"] == {b"x-after": b"2"}


async def test_an_instance_that_answers_before_the_request_ended_stops_both_sides(relay):
    instance, client = relay.instance, Client()
    call = await opened(relay, client)
    call.on_data(MESSAGE, len(MESSAGE), False)
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["data"])
    sid = instance.stream()
    instance.answer(sid, trailers=[(b"grpc-status", b"not-a-number")])
    await instance.until(lambda: instance.requests[sid]["reset"] is not None)
    assert client.header(b"grpc-status") == b"not-a-number"  # passed on as it came
    assert client.stopped  # RST_STREAM NO_ERROR to the client, once the answer is out
    assert call.status == Status.UNKNOWN and not relay.calls
    call.on_data(MESSAGE, len(MESSAGE), True)  # what the client still sends is acknowledged, not forwarded
    assert client.acked == 2 * len(MESSAGE)


async def test_data_that_ends_the_response_without_trailers_is_passed_on(relay):
    instance, client = relay.instance, Client()
    call = await opened(relay, client)
    call.on_data(MESSAGE, len(MESSAGE), True)
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["ended"])
    instance.answer(instance.stream(), data=MESSAGE, end_with_data=True)
    await settle()
    assert client.data == MESSAGE and call.status == Status.UNKNOWN and not relay.calls


async def test_a_client_that_stops_reading_holds_back_the_instance(relay):
    instance, client = relay.instance, Client()
    call = await opened(relay, client)
    call.on_data(MESSAGE, len(MESSAGE), True)
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["ended"])
    sid = instance.stream()
    client.slow = True
    chunk = grpc_frame(b"r" * 600_000)  # past half the stream window: nghttp2 then sends WINDOW_UPDATE at once
    instance.answer(sid, data=chunk)
    await instance.until(lambda: call.held_response_bytes == len(chunk))
    window = instance.h2.stream_remote_window_size(sid)
    assert call.held_response_bytes == len(chunk) and client.waiting
    client.writable()  # woken, but still not reading: waits again
    assert client.waiting and call.held_response_bytes == len(chunk)
    client.slow = False
    client.writable()
    await settle()
    assert call.held_response_bytes == 0
    assert instance.h2.stream_remote_window_size(sid) == window + len(chunk)  # acknowledged once the client took it
    instance.h2.send_trailers(sid, [(b"grpc-status", b"0")])
    instance.flush()
    await settle()
    assert call.status == Status.OK


@pytest.mark.parametrize("step", ["headers", "data", "trailers"])
async def test_a_client_gone_at_each_step_cancels_the_instance_stream(relay, step):
    instance, client = relay.instance, Client()
    call = await opened(relay, client)
    call.on_data(MESSAGE, len(MESSAGE), True)
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["ended"])
    sid = instance.stream()
    instance.h2.send_response(sid, OK)
    if step == "headers":
        client.gone = True
        instance.flush()
    elif step == "data":
        instance.flush()
        await settle()
        client.gone = True
        instance.h2.send_data(sid, MESSAGE)
        instance.flush()
    else:
        instance.h2.send_data(sid, MESSAGE)
        instance.flush()
        await settle()
        client.gone = True
        instance.h2.send_trailers(sid, [(b"grpc-status", b"0")])
        instance.flush()
    await settle()
    assert call.status == Status.CANCELLED and not relay.calls
    if step != "trailers":
        await instance.until(lambda: instance.requests[sid]["reset"] == ErrorCode.CANCEL)
    assert relay.metrics_seen.requests == {(FID, 499): 1} and relay.metrics_seen.client_disconnects == 1


async def test_a_refusal_to_a_client_already_gone_still_ends_the_call(relay):
    client = Client()
    client.gone = True
    headers = [(n, b"Bearer wrong" if n == b"authorization" else v) for n, v in HEADERS]
    call = relay.open(headers, client, True)
    await settle()
    assert call.status == Status.UNAUTHENTICATED and not relay.calls
    assert relay.metrics_seen.requests == {("unknown", 401): 1}


@pytest.mark.parametrize("code,status", [(ErrorCode.CANCEL, Status.CANCELLED), (ErrorCode.REFUSED_STREAM, Status.UNAVAILABLE)])
async def test_an_instance_reset_is_passed_to_the_client(relay, code, status):
    instance, client = relay.instance, Client()
    call = await opened(relay, client)
    call.on_data(MESSAGE, len(MESSAGE), True)
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["ended"])
    instance.reset(instance.stream(), code)
    await settle()
    assert client.reset_code == code and call.status == status and not relay.calls


async def test_a_client_reset_before_the_call_started_reaches_nothing(relay):
    """A rapid reset: the stream is reset in the batch that opened it."""
    instance, client = relay.instance, Client()
    call = relay.open(HEADERS, client, False)
    call.on_data(MESSAGE, len(MESSAGE), False)
    call.on_reset(ErrorCode.CANCEL)
    await settle()
    assert call.status == Status.CANCELLED and instance.protocol is None  # never dialled the instance
    assert client.acked == len(MESSAGE)  # the credit of what it sent comes back
    assert relay.metrics_seen.requests == {("unknown", 499): 1}  # never routed: no function label
    call.on_trailers([(b"x-late", b"1")])  # frames after the end change nothing
    assert call.status == Status.CANCELLED


async def test_an_instance_that_stops_reading_holds_back_the_client(relay):
    """Request DATA is acknowledged to the client only as the instance takes it: a
    stalled instance stalls the client's window, not the gateway's memory."""
    instance, client = relay.instance, Client()
    instance.reading = False
    call = relay.open(HEADERS, client, False)
    call.on_data(MESSAGE, len(MESSAGE), False)
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["data"])
    chunk = grpc_frame(b"q" * 50_000)
    for _ in range(4):  # 200 kB: past the instance's 64 kB window and the engine's queue mark
        call.on_data(chunk, len(chunk), False)
        await settle()
    assert client.acked < len(MESSAGE) + 4 * len(chunk)  # the rest waits for the instance
    instance.read_again()
    total = len(MESSAGE) + 4 * len(chunk)
    await instance.until(lambda: client.acked == total)
    assert len(instance.requests[instance.stream()]["data"]) == total
    call.on_data(b"", 0, True)
    instance.answer(instance.stream(), data=MESSAGE, trailers=[(b"grpc-status", b"0")])
    await instance.until(lambda: call.status == Status.OK)


async def test_a_full_socket_to_the_instance_holds_back_the_client(relay):
    """The instance connection's transport over its high-water mark: request DATA waits
    in the engine and is acknowledged to the client once the socket drained."""
    instance, client = relay.instance, Client()
    call = relay.open(HEADERS, client, False)
    call.on_data(MESSAGE, len(MESSAGE), False)
    await instance.until(lambda: instance.requests and instance.requests[instance.stream()]["data"])
    upstream = instance.protocol
    upstream.pause_writing()
    acked = client.acked
    call.on_data(MESSAGE, len(MESSAGE), False)
    await settle()
    assert client.acked == acked  # held while the socket is full
    upstream.resume_writing()
    await instance.until(lambda: client.acked == acked + len(MESSAGE))
    assert instance.requests[instance.stream()]["data"] == 2 * MESSAGE
