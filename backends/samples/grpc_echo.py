"""Sample gRPC function: the fngate.echo.v1.Echo service plus grpc.health.v1.Health.

    python -m fngate.backends.samples.grpc_echo --host H --port P [--impl grpcio|grpclib]

Both implementations behave the same, so tests can check the gateway against either
HTTP/2 stack. A request can ask for replies of a given size, a delay before each
reply, a number of replies (EchoStream, EchoChat) and an error status with custom
trailing metadata (see grpc_echo.proto). `Stats` counts started, completed and
cancelled calls so a test can see from outside that a cancel reached the instance.

The protobuf modules next to this file are generated from grpc_echo.proto; the
command to regenerate them is at the top of that file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from fngate.backends.samples import grpc_echo_pb2 as pb
from fngate.backends.samples._common import until_stop_signal

ECHO_SERVICE = "fngate.echo.v1.Echo"
HEALTH_SERVICE = "grpc.health.v1.Health"
_KNOWN_SERVICES = frozenset({"", ECHO_SERVICE})


class Failure(Exception):
    """The request asked the server to end the call with an error status."""

    def __init__(self, spec: pb.ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec


class EchoLogic:
    """What the service does, independent of the gRPC library serving it."""

    def __init__(self, impl: str, not_serving_for: float = 0.0) -> None:
        self.impl = impl
        self.serving_from = time.monotonic() + not_serving_for
        self.started = self.completed = self.cancelled = self.active = 0

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        self.started += 1
        self.active += 1
        try:
            yield
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except BaseException:  # an error status sent on purpose still completes the call
            self.completed += 1
            raise
        else:
            self.completed += 1
        finally:
            self.active -= 1

    def reply(self, req: pb.EchoRequest, index: int, metadata: dict[str, str]) -> pb.EchoReply:
        payload = b"e" * req.response_size if req.response_size else req.payload
        return pb.EchoReply(message=req.message, index=index, payload=payload, metadata=metadata, impl=self.impl)

    async def unary(self, req: pb.EchoRequest, metadata: dict[str, str]) -> pb.EchoReply:
        if req.error.code:
            raise Failure(req.error)
        if req.delay_s:
            await asyncio.sleep(req.delay_s)
        return self.reply(req, 0, metadata)

    async def replies(self, req: pb.EchoRequest, metadata: dict[str, str], first: int = 0) -> AsyncIterator[pb.EchoReply]:
        fail_after = req.error.after if req.error.code else None
        for i in range(max(req.repeat, 1)):
            if fail_after is not None and i >= fail_after:
                raise Failure(req.error)
            if req.delay_s:
                await asyncio.sleep(req.delay_s)
            yield self.reply(req, first + i, metadata)
        if fail_after is not None:
            raise Failure(req.error)

    async def collect(self, requests: AsyncIterator[pb.EchoRequest]) -> pb.EchoSummary:
        summary = pb.EchoSummary(impl=self.impl)
        async for req in requests:
            if req.error.code:
                raise Failure(req.error)
            summary.count += 1
            summary.total_bytes += len(req.payload)
            summary.messages.append(req.message)
        return summary

    async def chat(self, requests: AsyncIterator[pb.EchoRequest], metadata: dict[str, str]) -> AsyncIterator[pb.EchoReply]:
        index = 0
        async for req in requests:
            async for reply in self.replies(req, metadata, index):
                index += 1
                yield reply

    def stats(self) -> pb.StatsReply:
        return pb.StatsReply(started=self.started, completed=self.completed, cancelled=self.cancelled, active=self.active)

    def health(self, service: str) -> HealthCheckResponse.ServingStatus.ValueType | None:
        """The health status for `service`, or None when the service is unknown."""
        if service not in _KNOWN_SERVICES:
            return None
        if time.monotonic() < self.serving_from:
            return HealthCheckResponse.NOT_SERVING
        return HealthCheckResponse.SERVING


def text_metadata(pairs: Iterable[tuple[str, object]]) -> dict[str, str]:
    return {k: v for k, v in pairs if isinstance(v, str) and not k.startswith(":") and not k.endswith("-bin")}


# -- grpcio (grpc.aio) -------------------------------------------------------------------


def _grpcio_server(logic: EchoLogic):
    import grpc

    from fngate.backends.samples import grpc_echo_pb2_grpc as pb_grpc

    codes = {c.value[0]: c for c in grpc.StatusCode}

    async def abort(context, spec: pb.ErrorSpec):
        context.set_trailing_metadata(tuple(spec.trailers.items()))
        await context.abort(codes.get(spec.code, grpc.StatusCode.UNKNOWN), spec.message)

    class Echo(pb_grpc.EchoServicer):
        async def Echo(self, request, context):
            async with logic.track():
                try:
                    return await logic.unary(request, text_metadata(context.invocation_metadata()))
                except Failure as f:
                    await abort(context, f.spec)

        async def EchoStream(self, request, context):
            async with logic.track():
                try:
                    async for reply in logic.replies(request, text_metadata(context.invocation_metadata())):
                        yield reply
                except Failure as f:
                    await abort(context, f.spec)

        async def EchoCollect(self, request_iterator, context):
            async with logic.track():
                try:
                    return await logic.collect(request_iterator)
                except Failure as f:
                    await abort(context, f.spec)

        async def EchoChat(self, request_iterator, context):
            async with logic.track():
                try:
                    async for reply in logic.chat(request_iterator, text_metadata(context.invocation_metadata())):
                        yield reply
                except Failure as f:
                    await abort(context, f.spec)

        async def Stats(self, request, context):
            return logic.stats()

    async def check(request, context):
        status = logic.health(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return HealthCheckResponse(status=status)  # type: ignore[arg-type]  # abort above raised for None

    async def watch(request, context):
        last = None
        while True:
            status = logic.health(request.service)
            status = HealthCheckResponse.SERVICE_UNKNOWN if status is None else status
            if status != last:
                yield HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(0.2)

    health = grpc.method_handlers_generic_handler(
        HEALTH_SERVICE,
        {
            "Check": grpc.unary_unary_rpc_method_handler(check, HealthCheckRequest.FromString, HealthCheckResponse.SerializeToString),
            "Watch": grpc.unary_stream_rpc_method_handler(watch, HealthCheckRequest.FromString, HealthCheckResponse.SerializeToString),
        },
    )
    unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    server = grpc.aio.server(options=unlimited)
    pb_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_generic_rpc_handlers((health,))
    return server


# -- grpclib -----------------------------------------------------------------------------


def _grpclib_handlers(logic: EchoLogic) -> list:
    from grpclib.const import Cardinality, Handler, Status

    from fngate.backends.samples import grpc_echo_grpc

    async def fail(stream, spec: pb.ErrorSpec) -> None:
        await stream.send_trailing_metadata(status=Status(spec.code), status_message=spec.message, metadata=dict(spec.trailers))

    class Echo(grpc_echo_grpc.EchoBase):
        async def Echo(self, stream) -> None:
            async with logic.track():
                request = await stream.recv_message()
                try:
                    reply = await logic.unary(request, text_metadata(stream.metadata.items()))
                except Failure as f:
                    return await fail(stream, f.spec)
                await stream.send_message(reply)

        async def EchoStream(self, stream) -> None:
            async with logic.track():
                request = await stream.recv_message()
                try:
                    async for reply in logic.replies(request, text_metadata(stream.metadata.items())):
                        await stream.send_message(reply)
                except Failure as f:
                    await fail(stream, f.spec)

        async def EchoCollect(self, stream) -> None:
            async with logic.track():
                try:
                    summary = await logic.collect(stream.__aiter__())
                except Failure as f:
                    return await fail(stream, f.spec)
                await stream.send_message(summary)

        async def EchoChat(self, stream) -> None:
            async with logic.track():
                try:
                    async for reply in logic.chat(stream.__aiter__(), text_metadata(stream.metadata.items())):
                        await stream.send_message(reply)
                except Failure as f:
                    await fail(stream, f.spec)

        async def Stats(self, stream) -> None:
            await stream.recv_message()
            await stream.send_message(logic.stats())

    class Health:
        async def check(self, stream) -> None:
            request = await stream.recv_message()
            status = logic.health(request.service)
            if status is None:
                return await stream.send_trailing_metadata(status=Status.NOT_FOUND, status_message="unknown service")
            await stream.send_message(HealthCheckResponse(status=status))

        async def watch(self, stream) -> None:
            request = await stream.recv_message()
            last = None
            while True:
                status = logic.health(request.service)
                status = HealthCheckResponse.SERVICE_UNKNOWN if status is None else status
                if status != last:
                    await stream.send_message(HealthCheckResponse(status=status))
                    last = status
                await asyncio.sleep(0.2)

        def __mapping__(self) -> dict:
            return {
                f"/{HEALTH_SERVICE}/Check": Handler(self.check, Cardinality.UNARY_UNARY, HealthCheckRequest, HealthCheckResponse),
                f"/{HEALTH_SERVICE}/Watch": Handler(self.watch, Cardinality.UNARY_STREAM, HealthCheckRequest, HealthCheckResponse),
            }

    return [Echo(), Health()]


# -- running -----------------------------------------------------------------------------


class EchoServer:
    """A running Echo server on one port (either implementation)."""

    def __init__(self, impl: str, not_serving_for: float = 0.0) -> None:
        if impl not in ("grpcio", "grpclib"):
            raise ValueError(f"unknown implementation {impl!r}: use grpcio or grpclib")
        self.impl = impl
        self.logic = EchoLogic(impl, not_serving_for)
        self.port = 0
        self._server: Any = None  # a grpc.aio or a grpclib server, by impl

    async def start(self, host: str, port: int) -> int:
        if self.impl == "grpcio":
            self._server = _grpcio_server(self.logic)
            self.port = self._server.add_insecure_port(f"{host}:{port}")
            await self._server.start()
        else:
            from grpclib.server import Server

            sock = socket.create_server((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._server = Server(_grpclib_handlers(self.logic))
            await self._server.start(sock=sock)
            self.port = sock.getsockname()[1]
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is None:
            return
        if self.impl == "grpcio":
            await self._server.stop(grace)
        else:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), grace)
        self._server = None


async def serve(host: str, port: int, impl: str, not_serving_for: float = 0.0) -> None:
    server = EchoServer(impl, not_serving_for)
    bound = await server.start(host, port)
    print(f"grpc_echo ({impl}) listening on {host}:{bound}", flush=True)
    await until_stop_signal()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grpc_echo", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--impl", choices=("grpcio", "grpclib"), default="grpcio")
    parser.add_argument(
        "--not-serving-for",
        type=float,
        default=0.0,
        metavar="S",
        help="report NOT_SERVING on grpc.health.v1 for the first S seconds (to test readiness)",
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.impl, args.not_serving_for))


if __name__ == "__main__":
    main()
