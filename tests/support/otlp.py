"""A real OTLP/HTTP trace receiver for tests: an HTTP server on a free loopback port that
decodes each POST /v1/traces body as the protobuf ExportTraceServiceRequest (with
opentelemetry-proto's generated classes, not the SDK under test) and keeps the spans."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 lower-case hex digits, as in a traceparent
    span_id: str  # 16
    parent_id: str  # "" for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, object]
    service: str
    status_code: int = 0  # opentelemetry.proto.trace.v1.Status.StatusCode: 0 unset, 1 ok, 2 error


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.content_types: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        async with asyncio.timeout(timeout):
            while len(self.spans) < count:
                await asyncio.sleep(0.05)
        return self.spans

    async def _export(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.content_types.add(request.content_type)
        self.spans.extend(decode(await request.read()))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")


class ThreadedOtlpReceiver:
    """The same receiver for synchronous tests (a `fngate serve` process exporting to it):
    http.server in a thread of its own."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.spans.extend(decode(body) if self.path == "/v1/traces" else [])
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, predicate, timeout: float = 20.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while not predicate(self.spans):
            if time.monotonic() > deadline:
                raise TimeoutError(f"spans received: {[s.name for s in self.spans]}")
            time.sleep(0.1)
        return self.spans

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one OTLP/HTTP protobuf export request."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for resource_spans in req.resource_spans:
        service = ""
        for attr in resource_spans.resource.attributes:
            if attr.key == "service.name":
                service = attr.value.string_value
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes: dict[str, object] = {}
                for attr in span.attributes:
                    value = attr.value
                    attributes[attr.key] = getattr(value, value.WhichOneof("value") or "string_value")
                out.append(
                    ReceivedSpan(
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.kind,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        attributes,
                        service,
                        span.status.code,
                    )
                )
    return out


def tree(spans: list[ReceivedSpan]) -> dict[str, list[str]]:
    """parent span name -> its children's names, sorted ("" for the roots)."""
    by_id = {s.span_id: s for s in spans}
    out: dict[str, list[str]] = {}
    for s in spans:
        parent = by_id[s.parent_id].name if s.parent_id in by_id else ""
        out.setdefault(parent, []).append(s.name)
    return {k: sorted(v) for k, v in out.items()}
