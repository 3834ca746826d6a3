"""gRPC call metrics, updated in place on the hot path and rendered on demand.

Prometheus text exposition, beside the HTTP metrics on the admin listener:
  fngate_grpc_calls_total{function_id, grpc_status}   counter
  fngate_grpc_call_duration_seconds{function_id}      histogram (call start to end)
  fngate_grpc_active_streams{function_id}             gauge
and NVCF's gRPC proxy names (spec part 2, 10.2) for the same calls:
  function_request_total{function_id, function_version_id, nca_id}   counter, calls started
  nvcf_grpc_proxy_service_active_http_requests_total                 gauge, calls in progress
(ids only once the call's key was checked and its version chosen), and its session and
connection series, fed by proxy/grpc/sessions.py (an fngate session stands for NVCF's
worker tunnel; a client connection attached to a session for NVCF's client connection):
  nvcf_grpc_proxy_service_active_connections_total                  gauge, client connections in a session
  nvcf_grpc_proxy_service_client_connection_opened_total            counter
  nvcf_grpc_proxy_service_client_connection_duration_seconds        histogram (default buckets)
  nvcf_grpc_proxy_service_session_init_seconds_total{is_reconnect}  histogram (default buckets):
      a new session: until it holds its instance's slot; a reconnect: until it is attached
  nvcf_grpc_proxy_service_worker_connections_active                 gauge, sessions holding a slot
  nvcf_grpc_proxy_service_worker_connection_opened_total            counter
  nvcf_grpc_proxy_service_worker_connection_closed_total{reason}    counter, NVCF's reasons, all listed
  nvcf_grpc_proxy_service_worker_connection_duration_seconds        histogram (1...3600 s)
Label values are fixed strings only. The other names of 10.2 (worker connect/token, NATS)
describe NVCF's worker-dials-proxy tunnels and NATS, which fngate has not.
"""

from __future__ import annotations

from bisect import bisect_left

from fngate.proxy.calls.metrics import BUCKETS, UNKNOWN_FUNCTION  # the request histogram's buckets, so both series compare
from fngate.proxy.grpc.protocol import Status

NVCF = "nvcf_grpc_proxy_service_"
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # Prometheus' default
WORKER_CONNECTION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0)
CLOSE_REASONS = ("client_closed", "worker_closed", "shutdown", "ttl_expired", "capacity_reached", "deleted", "unknown")


class _Histogram:
    __slots__ = ("bounds", "counts", "n", "total")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines = []
        cumulative = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cumulative}')
        tail = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{tail} {self.total:.6f}")
        lines.append(f"{name}_count{tail} {self.n}")
        return lines


class GrpcMetrics:
    def __init__(self) -> None:
        self.calls: dict[tuple[str, Status], int] = {}
        self.active: dict[str, int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.function_requests: dict[tuple[str, str, str], int] = {}  # (function, version, caller's account)
        # sessions (NVCF's worker tunnels) and the client connections attached to them
        self.session_init = {False: _Histogram(DEFAULT_BUCKETS), True: _Histogram(DEFAULT_BUCKETS)}  # by is_reconnect
        self.worker_opened = 0
        self.worker_closed = dict.fromkeys(CLOSE_REASONS, 0)
        self.worker_duration = _Histogram(WORKER_CONNECTION_BUCKETS)
        self.client_opened = 0
        self.client_closed = 0
        self.client_duration = _Histogram(DEFAULT_BUCKETS)

    def worker_connection_closed(self, reason: str, seconds: float) -> None:
        self.worker_closed[reason] += 1
        self.worker_duration.observe(seconds)

    def client_connection_closed(self, seconds: float) -> None:
        self.client_closed += 1
        self.client_duration.observe(seconds)

    def started(self, function_id: str, version_id: str = "", nca_id: str = "", new_request: bool = True) -> None:
        """A call started; `new_request`: it counts in function_request_total (a call of an
        existing gRPC session does not, as at NVCF)."""
        self.active[function_id] = self.active.get(function_id, 0) + 1
        if not new_request:
            return
        key = (function_id, version_id, nca_id)
        self.function_requests[key] = self.function_requests.get(key, 0) + 1

    def finished(self, function_id: str, status: Status, seconds: float) -> None:
        """A call ended; function_id "" for calls refused before a function was routed and
        its key checked (rendered as UNKNOWN_FUNCTION, as for HTTP)."""
        if function_id:
            self.active[function_id] -= 1
        key = (function_id, status)
        self.calls[key] = self.calls.get(key, 0) + 1
        hist = self.latency.get(function_id)
        if hist is None:
            hist = self.latency[function_id] = _Histogram()
        hist.observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP fngate_grpc_calls_total gRPC calls by function and final grpc-status.",
            "# TYPE fngate_grpc_calls_total counter",
        ]
        for (fid, status), n in sorted(self.calls.items()):
            lines.append(f'fngate_grpc_calls_total{{function_id="{fid or UNKNOWN_FUNCTION}",grpc_status="{status.name}"}} {n}')
        lines += [
            "# HELP fngate_grpc_call_duration_seconds gRPC call duration, from request headers to the end of the call.",
            "# TYPE fngate_grpc_call_duration_seconds histogram",
        ]
        for fid, hist in sorted(self.latency.items()):
            fid = fid or UNKNOWN_FUNCTION
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'fngate_grpc_call_duration_seconds_bucket{{function_id="{fid}",le="{le}"}} {cumulative}')
            lines.append(f'fngate_grpc_call_duration_seconds_sum{{function_id="{fid}"}} {hist.total:.6f}')
            lines.append(f'fngate_grpc_call_duration_seconds_count{{function_id="{fid}"}} {hist.n}')
        lines += [
            "# HELP fngate_grpc_active_streams gRPC calls in progress.",
            "# TYPE fngate_grpc_active_streams gauge",
        ]
        for fid, n in sorted(self.active.items()):
            lines.append(f'fngate_grpc_active_streams{{function_id="{fid}"}} {n}')
        lines += ["# HELP function_request_total gRPC calls started (NVCF gRPC proxy name).", "# TYPE function_request_total counter"]
        for (fid, vid, nca), n in sorted(self.function_requests.items()):
            lines.append(f'function_request_total{{function_id="{fid}",function_version_id="{vid}",nca_id="{nca}"}} {n}')
        lines += [
            "# HELP nvcf_grpc_proxy_service_active_http_requests_total gRPC calls in progress (NVCF gRPC proxy name).",
            "# TYPE nvcf_grpc_proxy_service_active_http_requests_total gauge",
            f"nvcf_grpc_proxy_service_active_http_requests_total {sum(self.active.values())}",
        ]
        lines += self._render_sessions()
        return "\n".join(lines) + "\n"

    def _render_sessions(self) -> list[str]:
        lines = [
            f"# HELP {NVCF}active_connections_total Client connections attached to a gRPC session.",
            f"# TYPE {NVCF}active_connections_total gauge",
            f"{NVCF}active_connections_total {self.client_opened - self.client_closed}",
            f"# HELP {NVCF}client_connection_opened_total Client connections attached to a gRPC session.",
            f"# TYPE {NVCF}client_connection_opened_total counter",
            f"{NVCF}client_connection_opened_total {self.client_opened}",
            f"# HELP {NVCF}client_connection_duration_seconds How long a client connection stayed attached to its session.",
            f"# TYPE {NVCF}client_connection_duration_seconds histogram",
            *self.client_duration.render(f"{NVCF}client_connection_duration_seconds"),
            f"# HELP {NVCF}session_init_seconds_total Time to set up a gRPC session: a new one until it holds its instance, a reconnect until attached.",
            f"# TYPE {NVCF}session_init_seconds_total histogram",
        ]
        for reconnect in (False, True):
            lines += self.session_init[reconnect].render(f"{NVCF}session_init_seconds_total", f'is_reconnect="{str(reconnect).lower()}"')
        lines += [
            f"# HELP {NVCF}worker_connections_active gRPC sessions holding an instance's slot.",
            f"# TYPE {NVCF}worker_connections_active gauge",
            f"{NVCF}worker_connections_active {self.worker_opened - sum(self.worker_closed.values())}",
            f"# HELP {NVCF}worker_connection_opened_total gRPC sessions that got an instance's slot.",
            f"# TYPE {NVCF}worker_connection_opened_total counter",
            f"{NVCF}worker_connection_opened_total {self.worker_opened}",
            f"# HELP {NVCF}worker_connection_closed_total gRPC sessions that gave their instance's slot back, by reason.",
            f"# TYPE {NVCF}worker_connection_closed_total counter",
            *(f'{NVCF}worker_connection_closed_total{{reason="{reason}"}} {n}' for reason, n in self.worker_closed.items()),
            f"# HELP {NVCF}worker_connection_duration_seconds How long a gRPC session held its instance's slot.",
            f"# TYPE {NVCF}worker_connection_duration_seconds histogram",
            *self.worker_duration.render(f"{NVCF}worker_connection_duration_seconds"),
        ]
        return lines
