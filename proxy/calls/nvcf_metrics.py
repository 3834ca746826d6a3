"""NVCF's own metric names (spec part 2, 10.1 and 10.2), beside fngate's series on the
admin /metrics, so NVCF's dashboards and alerts work unchanged.

Invocation service names (counters without `_total`, as NVCF's exporter writes them):
  function_request{function_id, function_version_id, nca_id}          invocations started
  function_request_latency{function_id, function_version_id}          histogram, start to answer end
  app_invocation_error{http_status_code, function_id}                 the gateway's own errors:
      504 and 499 carry the function id, the others function_id="" (NVCF's rule)
  axum_http_requests_total{method, endpoint, status}                  every request
  axum_http_requests_duration_seconds{method, endpoint, status}       histogram
The gRPC proxy's names are in proxy/grpc/metrics.py.

Label values never come from unauthenticated input: function, version and account ids
are recorded only once a key was checked and a version chosen; `method` is one of the
registered methods or OTHER; `endpoint` is one of the route templates, TLB (a host- or
header-routed call) or UNKNOWN; status codes are three digits.
"""

from __future__ import annotations

from collections.abc import Iterable

TLB = "TLB"
UNKNOWN_ENDPOINT = "UNKNOWN"
PEXEC_FUNCTION = "/v2/nvcf/pexec/functions/{function_id}"
PEXEC_VERSION = "/v2/nvcf/pexec/functions/{function_id}/versions/{function_version_id}"
PEXEC_STATUS = "/v2/nvcf/pexec/status/{request_id}"
_HEALTH = {b"/health": "/health", b"/v2/health/ready": "/v2/health/ready"}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
CLIENT_GONE = 499

LATENCY_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1000.0)


def path_endpoint(target: bytes) -> str:
    """The route template of a path-routed request (pexec, health), else UNKNOWN."""
    path = target.split(b"?", 1)[0].rstrip(b"/")
    health = _HEALTH.get(path)
    if health is not None:
        return health
    parts = path.split(b"/")
    if parts[1:4] == [b"v2", b"nvcf", b"pexec"]:
        if len(parts) == 6 and parts[4] == b"status":
            return PEXEC_STATUS
        if len(parts) == 6 and parts[4] == b"functions":
            return PEXEC_FUNCTION
        if len(parts) == 8 and parts[4] == b"functions" and parts[6] == b"versions":
            return PEXEC_VERSION
    return UNKNOWN_ENDPOINT


class Histogram:
    """Buckets, sum and count of one series (fngate's own request latency too, metrics.py)."""

    __slots__ = ("bounds", "counts", "n", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        # bisect_left by a loop: a call of bisect costs more than the few comparisons
        # before a request's duration finds its bucket (the bounds are ascending)
        i = 0
        for bound in self.bounds:
            if not bound < value:
                break
            i += 1
        self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> Iterable[str]:
        acc = 0
        sep = "," if labels else ""
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            yield f'{name}_bucket{{{labels}{sep}le="{le}"}} {acc}'
        yield f"{name}_sum{{{labels}}} {self.total:.6f}"
        yield f"{name}_count{{{labels}}} {self.n}"


class NvcfMetrics:
    """Updated in place on the hot path (dict increments), rendered on demand.

    axum_http_requests_total of a label set is its duration histogram's count, so a
    request updates one dict entry for both (a lookup fewer per request)."""

    __slots__ = ("errors", "http_latency", "latency", "started")

    def __init__(self) -> None:
        self.started: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.errors: dict[tuple[int, str], int] = {(CLIENT_GONE, ""): 0}  # NVCF registers 499 at 0
        self.http_latency: dict[tuple[str, str, int], Histogram] = {}

    def invocation(self, function_id: str, version_id: str, nca_id: str) -> None:
        """An authenticated invocation of a chosen version starts (before its rate limit)."""
        key = (function_id, version_id, nca_id)
        self.started[key] = self.started.get(key, 0) + 1

    def invocation_ended(self, function_id: str, version_id: str, seconds: float) -> None:
        hist = self.latency.get((function_id, version_id))
        if hist is None:
            hist = self.latency[(function_id, version_id)] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)

    def app_error(self, status: int, function_id: str = "") -> None:
        """The gateway's own error answer; `function_id` only for 504 and 499, as NVCF."""
        key = (status, function_id if status in (504, CLIENT_GONE) else "")
        self.errors[key] = self.errors.get(key, 0) + 1

    def http_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        key = (method if method in _METHODS else "OTHER", endpoint, status)
        hist = self.http_latency.get(key)
        if hist is None:
            hist = self.http_latency[key] = Histogram(HTTP_BUCKETS)
        hist.observe(seconds)

    def render(self) -> str:
        out = ["# HELP function_request Invocations started (NVCF invocation service name).", "# TYPE function_request counter"]
        for (fid, vid, nca), n in sorted(self.started.items()):
            out.append(f'function_request{{function_id="{fid}",function_version_id="{vid}",nca_id="{nca}"}} {n}')
        out += ["# HELP function_request_latency Invocation latency, seconds.", "# TYPE function_request_latency histogram"]
        for (fid, vid), hist in sorted(self.latency.items()):
            out.extend(hist.lines("function_request_latency", f'function_id="{fid}",function_version_id="{vid}"'))
        out += ["# HELP app_invocation_error The gateway's own error answers.", "# TYPE app_invocation_error counter"]
        for (status, fid), n in sorted(self.errors.items()):
            out.append(f'app_invocation_error{{http_status_code="{status}",function_id="{fid}"}} {n}')
        out += ["# HELP axum_http_requests_total HTTP requests answered.", "# TYPE axum_http_requests_total counter"]
        for (method, endpoint, status), hist in sorted(self.http_latency.items()):
            out.append(f'axum_http_requests_total{{method="{method}",endpoint="{endpoint}",status="{status}"}} {hist.n}')
        out += ["# HELP axum_http_requests_duration_seconds HTTP request duration.", "# TYPE axum_http_requests_duration_seconds histogram"]
        for (method, endpoint, status), hist in sorted(self.http_latency.items()):
            labels = f'method="{method}",endpoint="{endpoint}",status="{status}"'
            out.extend(hist.lines("axum_http_requests_duration_seconds", labels))
        return "\n".join(out) + "\n"
