"""Gateway configuration: one frozen value handed to every part of the data plane."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

# The default bind address, and where the parts of one fngate reach each other
# (worker siblings, private admin ports, local instances, the CLI's default URLs).
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = LOOPBACK
    http_port: int = 8000  # HTTP/1.1 and cleartext HTTP/2 (prior knowledge), or TLS with ALPN
    grpc_port: int | None = 10081  # HTTP/2-only listener for gRPC; None: not opened
    admin_port: int | None = 9090  # /metrics, /healthz, /readyz; None: not opened
    admin_host: str | None = None  # None: `host` (--workers N gives each worker a private loopback one)
    tls_cert: str | None = None
    tls_key: str | None = None
    workers: int = 1
    # Pending-connection queue of each listener. asyncio's default (100) resets
    # connections in a burst (thousands of SSE clients reconnecting at once); the
    # kernel still caps it at net.core.somaxconn.
    backlog: int = 4096
    region: str = "local"  # NVCF-INVOCATION-REGION
    # timeouts (seconds)
    default_poll_seconds: int = 60  # NVCF-POLL-SECONDS when absent
    sse_pexec_poll_seconds: int = 1200  # path-routed pexec with Accept: text/event-stream
    header_grace: float = 2.0  # added to the poll window before 504
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0  # a started response (stream) with no byte for this long is cut
    client_header_timeout: float = 10.0  # slowloris: a request head must arrive within this
    client_body_idle_timeout: float = 60.0  # a request body stalled this long is cut
    keepalive_timeout: float = 75.0  # idle client keep-alive connections are closed after this
    # Slow request bodies: while a request holds an instance slot, its body must arrive at
    # >= client_body_min_rate bytes/s on average over each client_body_rate_window seconds,
    # once client_body_rate_grace seconds have passed (a window in which the gateway's
    # buffer was full, the instance being the slow side, does not count); else 408 / the
    # stream is reset, and the slot is free. 0 turns the check off.
    client_body_min_rate: float = 1024.0
    client_body_rate_window: float = 10.0
    client_body_rate_grace: float = 10.0
    # Instance slots that the requests of one client connection (an HTTP/2 connection's
    # streams) hold at once; more wait for one of them to end, within their poll window.
    # 0: no cap. HTTP/1.1 answers one request at a time on a connection anyway.
    max_slots_per_connection: int = 100
    upstream_keepalive: float = 30.0  # idle pooled instance connections expire after this
    upstream_pool_size: int = 256  # idle connections kept per instance
    sse_queue_keepalive: float = 0.0  # >0: `: keep-alive` comments to queued SSE requests
    rate_limit_redis: str | None = None  # redis:// URL: rate-limit buckets shared through Redis (proxy/routing/rate_lease.py)
    # the LLM gateway enforces a model's `llmConfig.uris` on chat and embeddings too (NVCF's
    # MODEL_URI_ALLOWLIST_ENABLED); on /v1/responses it always does
    llm_uri_allowlist: bool = False
    pexec_results_redis: str | None = None  # redis:// URL: pexec results any gateway on it can poll (proxy/calls/pexec_results.py)
    pexec_max_results: int = 10_000  # pexec requests tracked for polling at once (the oldest go first)
    pexec_max_result_bytes: int = 5 * 1024 * 1024  # larger: zipped, 302 (NVCF's 5 MiB)
    # NVCF's worker paths (spec part 2, 1.6, 6.3): each request's NVCF-LARGE-OUTPUT-DIR and
    # NVCF-ASSET-DIR are `{dir}/{requestId}`, on the machine the instances run on (local
    # backend); pexec/exec progress and artifacts are read there
    output_dir: str = "/var/inf/response"
    asset_dir: str = "/var/inf/inputAssets"
    large_results_dir: str = os.path.join(tempfile.gettempdir(), "fngate-large-results")  # zipped results behind a 302
    # the control plane's asset lookup (NVCF-INPUT-ASSET-REFERENCES, proxy/calls/pexec_assets.py):
    # its API URL and the admin key; None: no assets at invocation
    asset_lookup_url: str | None = None
    asset_lookup_key: str | None = field(default=None, repr=False)
    max_header_bytes: int = 64 * 1024  # request head larger than this -> 431
    h2_max_concurrent_streams: int = 1000  # per client HTTP/2 connection; streams past it get REFUSED_STREAM
    max_body_buffer: int = 256 * 1024  # per-exchange buffered bytes before reading pauses
    load_report_interval: float = 0.5
    # observability (proxy/ops/observability.py): each off unless set
    otlp_endpoint: str | None = None  # OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (traces)
    trace_sample_ratio: float = 1.0  # share of new traces recorded
    trace_service_name: str = "fngate"
    access_log: str | None = None  # a file path, or "-" for standard output
    # gRPC sessions on the gRPC port (proxy/grpc/sessions.py; NVCF's routing unit, spec part 2,
    # section 7); False: every call is routed on its own there too, as on the HTTP port
    grpc_sessions: bool = True
    grpc_session_start_timeout: float = 30.0  # wait for a slot, then DEADLINE_EXCEEDED
    grpc_session_idle_timeout: float = 30.0  # a connection with no call of its session this long leaves it
    grpc_session_reconnect_grace: float = 30.0  # a session no connection is attached to ends after this
    grpc_max_sessions: int = 65536  # per gateway process
    grace: float = 10.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not 1 <= self.default_poll_seconds <= 3600:
            raise ValueError("default_poll_seconds must be within 1..3600")
        if self.client_body_min_rate < 0 or self.client_body_rate_window <= 0 or self.client_body_rate_grace < 0:
            raise ValueError("client_body_min_rate and client_body_rate_grace must be >= 0, client_body_rate_window > 0")
        if not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise ValueError("trace_sample_ratio must be within 0..1")
        if self.max_slots_per_connection < 0:
            raise ValueError("max_slots_per_connection must be >= 0")
