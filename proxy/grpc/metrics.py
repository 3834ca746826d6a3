"""gRPC call metrics, updated in place on the hot path and rendered on demand.

Prometheus text exposition, beside the HTTP metrics on the admin listener:
  fngate_grpc_calls_total{function_id, grpc_status}   counter
  fngate_grpc_call_duration_seconds{function_id}      histogram (call start to end)
  fngate_grpc_active_streams{function_id}             gauge
and NVCF's gRPC proxy names (spec part 2, 10.2) for the same calls:
  function_request_total{function_id, function_version_id, nca_id}   counter, calls started
  nvcf_grpc_proxy_service_active_http_requests_total                 gauge, calls in progress
(ids only once the call's key was checked and its version chosen).
"""

from __future__ import annotations

from bisect import bisect_left

from fngate.proxy.calls.metrics import BUCKETS, UNKNOWN_FUNCTION  # the request histogram's buckets, so both series compare
from fngate.proxy.grpc.protocol import Status


class _Histogram:
    __slots__ = ("counts", "n", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.n += 1


class GrpcMetrics:
    def __init__(self) -> None:
        self.calls: dict[tuple[str, Status], int] = {}
        self.active: dict[str, int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.function_requests: dict[tuple[str, str, str], int] = {}  # (function, version, caller's account)

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
        return "\n".join(lines) + "\n"
