"""Gateway metrics, updated in place on the hot path and rendered as Prometheus text
by the admin listener. Never a network call from the request path."""

from __future__ import annotations

from collections.abc import Callable

from fngate.proxy.calls.nvcf_metrics import UNKNOWN_ENDPOINT, Histogram, NvcfMetrics

# The function label of a request not routed to a function its key may invoke (no key,
# a bad key, an unknown function, pexec polls, the gateway's own health): label values
# never come from what an unauthenticated client sent, or anyone could add series.
UNKNOWN_FUNCTION = "unknown"

# The request duration histogram has one series set per function. Function ids come from
# the routing snapshot only; this caps the sets a gateway keeps (functions deleted since it
# started still count), the rest folding into OTHER_FUNCTIONS.
MAX_LATENCY_FUNCTIONS = 2000
OTHER_FUNCTIONS = "other"

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    __slots__ = (
        "client_disconnects",
        "extra",
        "in_flight",
        "latency",
        "limited",
        "nvcf",
        "on_drained",
        "requests",
        "retries",
        "sse_open",
        "upstream_errors",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (function id, status) -> count
        self.latency: dict[str, Histogram] = {}  # function id -> its durations (one entry: one lookup per request)
        self.in_flight = 0
        # called when in_flight falls to 0 (a graceful stop waits on it, proxy/server.py); whoever
        # lowers in_flight calls it, inline on the hot path: `if not in_flight and on_drained`
        self.on_drained: Callable[[], None] | None = None
        self.upstream_errors: dict[str, int] = {}  # kind -> count
        self.sse_open = 0
        self.retries = 0
        self.client_disconnects = 0
        self.limited: dict[str, int] = {}  # function id -> requests refused by its rate limit
        self.nvcf = NvcfMetrics()  # NVCF's names for the same requests (proxy/calls/nvcf_metrics.py)
        self.extra: list[Callable[[], str]] = []  # more Prometheus text, rendered after these (the LLM gateway's)

    def observe(self, function_id: str, status: int, seconds: float, method: str = "", endpoint: str = UNKNOWN_ENDPOINT) -> None:
        """`function_id`: a routed, authenticated function's id, else UNKNOWN_FUNCTION;
        `method` and `endpoint` label NVCF's axum_http_requests_* series."""
        self.nvcf.http_request(method, endpoint, status, seconds)
        key = (function_id, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(function_id)
        if hist is None:
            if len(self.latency) >= MAX_LATENCY_FUNCTIONS:
                function_id = OTHER_FUNCTIONS
                hist = self.latency.get(function_id)
            if hist is None:
                hist = self.latency[function_id] = Histogram(BUCKETS)
        hist.observe(seconds)

    def rate_limited(self, function_id: str) -> None:
        """A request refused by its function's rate limit (after its key check)."""
        self.limited[function_id] = self.limited.get(function_id, 0) + 1

    def left(self) -> None:
        """One invocation less in flight (off the hot path; the call does this inline)."""
        self.in_flight -= 1
        if not self.in_flight and self.on_drained is not None:
            self.on_drained()

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1

    def render(self, queue_depth: dict[str, int]) -> bytes:
        out = [
            "# HELP fngate_requests_total Invocations answered, by function and HTTP status.",
            "# TYPE fngate_requests_total counter",
        ]
        for (fid, status), n in sorted(self.requests.items()):
            out.append(f'fngate_requests_total{{function_id="{fid}",status="{status}"}} {n}')
        out += [
            "# HELP fngate_request_duration_seconds Time from request head to response end, by function.",
            "# TYPE fngate_request_duration_seconds histogram",
        ]
        for fid, hist in sorted(self.latency.items()):
            acc = 0
            for le, n in zip(BUCKETS, hist.counts, strict=False):
                acc += n
                out.append(f'fngate_request_duration_seconds_bucket{{function_id="{fid}",le="{le}"}} {acc}')
            out.append(f'fngate_request_duration_seconds_bucket{{function_id="{fid}",le="+Inf"}} {hist.n}')
            out.append(f'fngate_request_duration_seconds_sum{{function_id="{fid}"}} {hist.total:.6f}')
            out.append(f'fngate_request_duration_seconds_count{{function_id="{fid}"}} {hist.n}')
        out += [
            "# HELP fngate_in_flight_requests Invocations being served right now.",
            "# TYPE fngate_in_flight_requests gauge",
            f"fngate_in_flight_requests {self.in_flight}",
            "# HELP fngate_queue_depth Requests waiting for an instance slot, by function version.",
            "# TYPE fngate_queue_depth gauge",
        ]
        for vid, n in sorted(queue_depth.items()):
            out.append(f'fngate_queue_depth{{version_id="{vid}"}} {n}')
        out += [
            "# HELP fngate_upstream_errors_total Failures talking to instances, by kind.",
            "# TYPE fngate_upstream_errors_total counter",
        ]
        for kind, n in sorted(self.upstream_errors.items()):
            out.append(f'fngate_upstream_errors_total{{kind="{kind}"}} {n}')
        out += [
            "# HELP fngate_sse_streams_open Server-sent event streams being relayed.",
            "# TYPE fngate_sse_streams_open gauge",
            f"fngate_sse_streams_open {self.sse_open}",
            "# HELP fngate_retries_total Requests retried on another instance.",
            "# TYPE fngate_retries_total counter",
            f"fngate_retries_total {self.retries}",
            "# HELP fngate_client_disconnects_total Clients that went away before the response ended.",
            "# TYPE fngate_client_disconnects_total counter",
            f"fngate_client_disconnects_total {self.client_disconnects}",
            "# HELP fngate_rate_limited_total Invocations refused by their function's rate limit (429).",
            "# TYPE fngate_rate_limited_total counter",
        ]
        for fid, n in sorted(self.limited.items()):
            out.append(f'fngate_rate_limited_total{{function_id="{fid}"}} {n}')
        return ("\n".join(out) + "\n" + self.nvcf.render() + "".join(f() for f in self.extra)).encode()
