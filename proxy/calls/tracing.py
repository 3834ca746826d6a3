"""Traces: W3C trace context in, the gateway's phase spans out over OTLP/HTTP.

Imported only when `--otlp-endpoint` is set (proxy/server.py); with tracing off the
gateway never loads OpenTelemetry. Only the SDK's public API is used (TracerProvider,
BatchSpanProcessor, the ratio samplers, the W3C propagator, start_span with explicit
start and end times), so the OpenTelemetry packages are not pinned.

The span tree of one call (times are the call's marks, proxy/calls/observation.py):

    fngate.invoke (SERVER; child of the client's traceparent, or a new trace)
    ├── route_and_auth      request head -> routed and the key checked
    ├── queue_wait          -> a place at an instance
    ├── connect             -> the request is written (zero long on a pooled connection)
    └── instance (CLIENT)   request written -> response ended; its context is the
        │                   traceparent (and the client's tracestate) the instance gets
        ├── time_to_first_byte   -> the instance's response head
        └── streaming            -> the response's last byte

The root span starts when the call does (its start time set back to the request head),
the instance span when the request is sent (the instance must get its id); the other
spans are made at the end with their marked times. Ending a span only queues it: the
batch processor exports from its own thread, never on the event loop.

Sampling: `--trace-sample-ratio` decides for new traces (by trace id); a client's
traceparent carries its own decision, which is followed (OpenTelemetry's parent-based
sampler). An unsampled call still passes a trace context on (flag 00) and records nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Headers = list[tuple[bytes, bytes]]

if TYPE_CHECKING:
    from fngate.proxy.routing.snapshot import Endpoint


class CallRecord(Protocol):
    """The marks of a call the spans are made from (proxy/calls/observation.py's CallRecord)."""

    request_id: bytes
    function_id: str
    version_id: str
    started: float
    routed_at: float
    slot_at: float
    sent_at: float
    head_at: float
    grpc_status: int

    def wall_ns(self, at: float) -> int: ...


Attributes = dict[str, str | int]

_CONTEXT_FIELDS = (b"traceparent", b"tracestate")
# the grpc-status codes OpenTelemetry's conventions count as a server span's error
# (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS)
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


def server_attributes(method: str, target: bytes, authority: bytes, client: str, http2: bool, scheme: bytes) -> Attributes:
    """A request's semantic-convention attributes (HTTP server spans; gRPC adds its own)."""
    text = authority.decode("latin-1")
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        host, rest = (text[1:end], text[end + 1 :]) if end > 0 else (text, "")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    path, _, query = target.decode("latin-1").partition("?")
    out: Attributes = {
        "http.request.method": method,
        "url.path": path,
        "url.scheme": scheme.decode("latin-1"),
        "server.address": host,
        "client.address": client,
        "network.protocol.version": "2" if http2 else "1.1",
    }
    if port.isdigit():
        out["server.port"] = int(port)
    if query:
        out["url.query"] = query
    return out


def grpc_attributes(headers: Headers, client: str) -> Attributes:
    """A gRPC call's attributes: rpc.system/service/method beside the HTTP ones."""
    fields = {name: value for name, value in headers if name[:1] == b":"}
    path = fields.get(b":path", b"")
    out = server_attributes("POST", path, fields.get(b":authority", b""), client, True, fields.get(b":scheme", b"http"))
    out["rpc.system"] = "grpc"
    service, _, method = path.decode("latin-1").lstrip("/").rpartition("/")
    if service:
        out["rpc.service"] = service
        out["rpc.method"] = method
    return out


_TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """`http://host:4318` -> `http://host:4318/v1/traces` (OTLP/HTTP's path); a URL
    with a path of its own is used as it is."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--otlp-endpoint must be an http(s) URL, got {endpoint!r}")
    return endpoint if parts.path not in ("", "/") else endpoint.rstrip("/") + _TRACES_PATH


class Tracing:
    """The gateway's tracer: one per gateway process."""

    __slots__ = ("propagator", "provider", "tracer")

    def __init__(self, endpoint: str, sample_ratio: float, service: str = "fngate", exporter: SpanExporter | None = None) -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError(f"--trace-sample-ratio must be within 0..1, got {sample_ratio:g}")
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter(endpoint=traces_url(endpoint))))
        self.provider = provider
        self.tracer = provider.get_tracer("fngate.proxy")
        self.propagator = TraceContextTextMapPropagator()

    def begin(self, headers: Headers, started_ns: int, protocol: str, attributes: Attributes | None = None) -> CallTrace:
        """The root span of a call whose head arrived at `started_ns` (wall clock), with
        OpenTelemetry's semantic-convention `attributes` of the request (server_attributes)."""
        carrier: dict[str, str] = {}
        for name, value in headers:
            if name in _CONTEXT_FIELDS and name.decode() not in carrier:  # a repeated field: the first
                carrier[name.decode()] = value.decode("latin-1")
        parent = self.propagator.extract(carrier) if carrier else None
        root = self.tracer.start_span(
            "fngate.invoke", context=parent, kind=SpanKind.SERVER, start_time=started_ns, attributes={"fngate.protocol": protocol}
        )
        if attributes:
            root.set_attributes(attributes)
        return CallTrace(self, root, protocol == "grpc")

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter's thread (blocks: call it off the loop)."""
        self.provider.shutdown()


class CallTrace:
    """The spans of one call (see the module docstring)."""

    __slots__ = ("context", "grpc", "instance", "root", "tracing")

    def __init__(self, tracing: Tracing, root: Span, grpc: bool = False) -> None:
        self.tracing = tracing
        self.root = root
        self.grpc = grpc
        self.context: Context = set_span_in_context(root)
        self.instance: Span | None = None

    def sent(self, rec: CallRecord, headers: Headers, endpoint: Endpoint | None = None) -> Headers:
        """The instance span starts (`endpoint`: the instance, its server.address/port);
        `headers` with its trace context instead of the client's."""
        previous = self.instance
        if previous is not None:  # a retry: the first attempt failed before an answer
            previous.set_status(Status(StatusCode.ERROR, "retried on another instance"))
            previous.end(rec.wall_ns(rec.sent_at))
        tracing = self.tracing
        span = self.instance = tracing.tracer.start_span(
            "instance", context=self.context, kind=SpanKind.CLIENT, start_time=rec.wall_ns(rec.sent_at)
        )
        if span.is_recording():
            attributes: dict[str, str | int] = {"rpc.system": "grpc"} if self.grpc else {}
            if endpoint is not None:
                attributes.update({"server.address": endpoint.host, "server.port": endpoint.port, "fngate.instance_id": endpoint.id})
            span.set_attributes(attributes)
        carrier: dict[str, str] = {}
        tracing.propagator.inject(carrier, context=set_span_in_context(span))
        out = [field for field in headers if field[0] not in _CONTEXT_FIELDS]
        out.extend((name.encode(), value.encode()) for name, value in carrier.items())
        return out

    def end(self, rec: CallRecord, status: int, now: float) -> None:
        root = self.root
        end_ns = rec.wall_ns(now)
        if root.is_recording():
            self._phases(rec, now, end_ns)
            root.set_attributes(
                {
                    "fngate.request_id": rec.request_id.decode(),
                    "fngate.function_id": rec.function_id,
                    "fngate.version_id": rec.version_id,
                    "http.response.status_code": status,
                }
            )
            if self.grpc and rec.grpc_status >= 0:
                root.set_attribute("rpc.grpc.status_code", rec.grpc_status)
                if rec.grpc_status in _GRPC_SERVER_ERRORS:
                    root.set_status(Status(StatusCode.ERROR))
            elif status >= 500:
                root.set_status(Status(StatusCode.ERROR))
        elif self.instance is not None:
            self.instance.end(end_ns)
        root.end(end_ns)

    def _phases(self, rec: CallRecord, now: float, end_ns: int) -> None:
        routed = rec.routed_at or now
        self._span("route_and_auth", self.context, rec.wall_ns(rec.started), rec.wall_ns(routed))
        if not rec.routed_at:
            return
        slot = rec.slot_at or now
        self._span("queue_wait", self.context, rec.wall_ns(routed), rec.wall_ns(slot))
        if not rec.slot_at:
            return
        sent = rec.sent_at or now
        self._span("connect", self.context, rec.wall_ns(slot), rec.wall_ns(sent))
        instance = self.instance
        if instance is None:
            return
        inner = set_span_in_context(instance)
        head = rec.head_at or now
        self._span("time_to_first_byte", inner, rec.wall_ns(sent), rec.wall_ns(head))
        if rec.head_at:
            self._span("streaming", inner, rec.wall_ns(head), end_ns)
        instance.end(end_ns)

    def _span(self, name: str, parent: Context, start_ns: int, end_ns: int) -> None:
        self.tracing.tracer.start_span(name, context=parent, start_time=start_ns).end(max(end_ns, start_ns))
