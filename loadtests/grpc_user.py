"""A Locust user around a grpcio client for the sample Echo service (fngate.echo.v1.Echo).

Each call is reported to Locust's request events as type `gRPC`: `Echo` (unary),
`EchoStream` (server streaming, `stream_length` replies, timed to the last one) with
`EchoStream: first` (time to the first reply), and `EchoChat` (bidirectional,
`stream_length` requests each answered by one reply). A non-OK status is a `status` failure
named by its code; a reply of the wrong shape is a `check` failure. Routing follows
NVCF: `function-id` and `authorization` metadata on one channel per user.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, task

from fngate.backends.samples import grpc_echo_pb2 as pb
from fngate.backends.samples import grpc_echo_pb2_grpc as pb_grpc

from .arrival import ArrivalRate
from .checks import CHECK, STATUS, Failed
from .knobs import Knobs

if TYPE_CHECKING:
    from locust.env import Environment

grpc_gevent.init_gevent()  # grpcio must cooperate with Locust's gevent loop
UNARY = "Echo"


class _Calls:
    """Mixed into a User: the Echo calls, on one channel per gRPC target (calls alternate over them)."""

    timeout = 60.0
    host: str | None
    environment: Environment

    def setup_calls(self) -> None:
        self.knobs = Knobs.from_env()
        targets = [t.strip() for t in self.knobs.grpc_target.split(",") if t.strip()] or [(self.host or "").split("://")[-1]]
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self.channels = [grpc.insecure_channel(target, options=options) for target in targets]
        self.stubs = itertools.cycle([pb_grpc.EchoStub(channel) for channel in self.channels])
        self.metadata = []
        if not self.knobs.direct:
            self.metadata = [("function-id", self.knobs.grpc_function_id), ("authorization", f"Bearer {self.knobs.key}")]
        self.request = pb.EchoRequest(
            message="load",
            payload=b"x" * self.knobs.body_size,
            response_size=self.knobs.response_size,
            delay_s=self.knobs.delay,
        )

    def close_calls(self) -> None:
        for channel in self.channels:
            channel.close()

    def _record(self, name: str, seconds: float, length: int, failure: str | None) -> None:
        self.environment.events.request.fire(
            request_type="gRPC",
            name=name,
            response_time=seconds * 1000.0,
            response_length=length,
            exception=Failed(failure) if failure else None,
            context={},
        )

    def call_unary(self) -> None:
        started = time.perf_counter()
        length, failure = 0, None
        try:
            reply = next(self.stubs).Echo(self.request, metadata=self.metadata, timeout=self.timeout)
            length = reply.ByteSize()
            if reply.message != self.request.message:
                failure = f"{CHECK} reply message {reply.message!r}"
        except grpc.RpcError as err:
            failure = f"{STATUS} {err.code().name}"
        self._record(UNARY, time.perf_counter() - started, length, failure)

    def call_server_stream(self) -> None:
        want = max(self.knobs.stream_length, 1)
        request = pb.EchoRequest()
        request.CopyFrom(self.request)
        request.repeat = want
        started = time.perf_counter()
        count, length, failure = 0, 0, None
        try:
            for reply in next(self.stubs).EchoStream(request, metadata=self.metadata, timeout=self.timeout):
                if count == 0:
                    self._record("EchoStream: first", time.perf_counter() - started, 0, None)
                count += 1
                length += reply.ByteSize()
            if count != want:
                failure = f"{CHECK} {count} of {want} replies"
        except grpc.RpcError as err:
            failure = f"{STATUS} {err.code().name} after {count} replies"
        self._record("EchoStream", time.perf_counter() - started, length, failure)

    def call_bidi_stream(self) -> None:
        want = max(self.knobs.stream_length, 1)
        started = time.perf_counter()
        count, length, failure = 0, 0, None
        try:
            for reply in next(self.stubs).EchoChat(iter([self.request] * want), metadata=self.metadata, timeout=self.timeout):
                count += 1
                length += reply.ByteSize()
            if count != want:
                failure = f"{CHECK} {count} of {want} replies"
        except grpc.RpcError as err:
            failure = f"{STATUS} {err.code().name} after {count} replies"
        self._record("EchoChat", time.perf_counter() - started, length, failure)


class GrpcUser(_Calls, User):
    """Closed loop: unary, server-streaming and bidirectional calls, 3:1:1."""

    def wait_time(self) -> float:
        return self.knobs.think_time

    def on_start(self) -> None:
        self.setup_calls()

    def on_stop(self) -> None:
        self.close_calls()

    @task(3)
    def unary(self) -> None:
        self.call_unary()

    @task(1)
    def server_stream(self) -> None:
        self.call_server_stream()

    @task(1)
    def bidi_stream(self) -> None:
        self.call_bidi_stream()


class ArrivalGrpc(_Calls, ArrivalRate, User):
    """Open loop (soak): `grpc_rate_per_user` unary calls per second, each on its own greenlet."""

    concurrency = 1000  # greenlets in flight; the channel multiplexes them over HTTP/2
    wait_time = constant(0)

    def on_start(self) -> None:
        self.setup_calls()

    def on_stop(self) -> None:
        self.close_calls()

    def arrival_rate(self) -> float:
        return self.knobs.grpc_rate_per_user

    def arrival_name(self) -> str:
        return UNARY

    def invoke(self) -> None:
        self.call_unary()

    @task
    def arrivals(self) -> None:
        self.run_arrivals()
