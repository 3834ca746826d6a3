"""gRPC exits no other test executes: the gateway stopping past its grace period resets
the instance's stream (the instance sees the call cancelled), and an instance's GOAWAY
lets the call in progress finish while the next call goes over a new connection."""

from __future__ import annotations

import asyncio
import struct

import grpc
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded

from fngate.backends.samples import grpc_echo_pb2 as pb
from tests.proxy.grpc.conftest import running_gateway
from tests.proxy.grpc.gateway import F_IO, grpc_route, grpcio_channel, grpcio_stub, instance_stats, metadata, publish_routes, wait_for_stats
from tests.proxy.grpc.rawh2 import grpc_frame

pytestmark = pytest.mark.asyncio(loop_scope="module")

F_GOAWAY = "30000000-0000-4000-8000-0000000000aa"
V_GOAWAY = "40000000-0000-4000-8000-0000000000aa"


async def test_stop_past_the_grace_period_resets_the_instance_stream(instances):
    port = instances["grpcio"].port
    before = await instance_stats(port)
    async with running_gateway(instances) as gw, grpcio_channel(gw.port) as ch:
        call = grpcio_stub(ch).Echo(pb.EchoRequest(delay_s=30), metadata=metadata(F_IO))
        await wait_for_stats(port, lambda s: s.active > before.active)  # the call is on the instance
        await gw.gw.stop(grace=0.2)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call, 5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # the instance's stream was reset, not left to run its 30 s
    stats = await wait_for_stats(port, lambda s: s.cancelled > before.cancelled and s.active == before.active)
    assert stats.cancelled == before.cancelled + 1


def goaway_frame(last_stream_id: int, code: int = 0) -> bytes:
    payload = struct.pack(">II", last_stream_id, code)
    return struct.pack(">I", len(payload))[1:] + bytes([7, 0]) + struct.pack(">I", 0) + payload


class GoawayInstance:
    """An h2c gRPC instance that takes one request per connection, answers it 0.2 s later
    with the request's message echoed back, and sends GOAWAY naming that stream as the
    last it processes: before the answer (`early`, a graceful shutdown in progress; the
    connection then closes) or in the same write as the answer (the connection stays
    open until the gateway closes it)."""

    def __init__(self, early: bool) -> None:
        self.early = early
        self.connections = 0
        self.answered = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        h2.initiate_connection()
        writer.write(h2.data_to_send())
        bodies: dict[int, bytes] = {}
        first: int | None = None
        try:
            while data := await reader.read(65536):
                for ev in h2.receive_data(data):
                    if isinstance(ev, RequestReceived) and first is None:
                        first = ev.stream_id
                        if self.early:
                            writer.write(h2.data_to_send() + goaway_frame(first))
                    elif isinstance(ev, DataReceived):
                        bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                        h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, StreamEnded) and ev.stream_id == first:
                        await asyncio.sleep(0.2)
                        request = pb.EchoRequest.FromString(bodies[first][5:])
                        h2.send_headers(first, [(":status", "200"), ("content-type", "application/grpc")])
                        h2.send_data(first, grpc_frame(pb.EchoReply(message=request.message).SerializeToString()))
                        h2.send_headers(first, [("grpc-status", "0")], end_stream=True)
                        writer.write(h2.data_to_send() + (b"" if self.early else goaway_frame(first)))
                        await writer.drain()
                        self.answered += 1
                        if not self.early:
                            await reader.read()  # until the gateway closes the connection
                        return
                writer.write(h2.data_to_send())
        except ConnectionError:
            pass
        finally:
            writer.close()


async def call_twice_through(gateway, instance: GoawayInstance) -> tuple[str, str]:
    publish_routes(gateway.holder, grpc_route(F_GOAWAY, V_GOAWAY, await instance.start()))
    try:
        async with grpcio_channel(gateway.port) as ch:
            stub = grpcio_stub(ch)
            first = await asyncio.wait_for(stub.Echo(pb.EchoRequest(message="one"), metadata=metadata(F_GOAWAY)), 10)
            second = await asyncio.wait_for(stub.Echo(pb.EchoRequest(message="two"), metadata=metadata(F_GOAWAY)), 10)
        return first.message, second.message
    finally:
        await instance.stop()


async def test_instance_goaway_after_its_answer_sends_the_next_call_over_a_new_connection(gateway):
    instance = GoawayInstance(early=False)
    assert await call_twice_through(gateway, instance) == ("one", "two")
    assert instance.connections == 2 and instance.answered == 2


async def test_instance_goaway_before_its_answer_lets_the_call_in_progress_finish(gateway):
    instance = GoawayInstance(early=True)
    assert await call_twice_through(gateway, instance) == ("one", "two")
    assert instance.connections == 2 and instance.answered == 2
