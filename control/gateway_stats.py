"""Live numbers for the console, computed from the gateway's own counters.

The control plane reads the same Prometheus text that `/metrics` on the gateway's admin
port serves (in-process gateway or `--workers N`, whose parent joins the workers' series:
the `worker` label is summed away), keeps the recent readings, and turns each pair of
successive readings into rates and quantiles, as Prometheus' `rate()` and
`histogram_quantile()` would. Readings are taken when someone asks (at most one per
`min_interval`), so nothing runs while nobody watches, and nothing here touches the
gateway's request path: a scrape is what Prometheus does anyway.

What the gateway's counters carry decides what is per function: requests by status, the
request duration histogram (HTTP and gRPC calls) and gRPC calls are labelled by function,
queue depth by version; the in-flight gauge is gateway-wide, and the answer says so
(`latencyScope`, `inFlightScope`). In flight per function comes from the gateways' load
reports when there are some (the control plane's `fngate_version_in_flight`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .promtext import Exposition, ExpositionError, quantile

Fetch = Callable[[], Awaitable[str]]
ReadyCounts = Callable[[], Awaitable[dict[str, int]]]  # version id -> ready instances
InFlightCounts = Callable[[], dict[str, int]]  # version id -> requests on instances, from the gateways' load reports


@dataclass(frozen=True, slots=True)
class Reading:
    at: float  # wall clock, seconds since the epoch
    gateway: Exposition | None  # None when the scrape failed
    ready: Mapping[str, int] = field(default_factory=dict)
    in_flight: Mapping[str, int] = field(default_factory=dict)  # versions some gateway reported


def _delta(now: float, before: float) -> float:
    return now - before if now >= before else now  # a counter that went back was reset (a restarted worker)


def _bucket_delta(now: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    old = dict(before)
    out = [(bound, count - old.get(bound, 0.0)) for bound, count in now]
    return now if any(n < 0 for _, n in out) else out


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


class GatewayStats:
    def __init__(
        self,
        fetch: Fetch | None = None,
        ready_counts: ReadyCounts | None = None,
        in_flight_counts: InFlightCounts | None = None,
        *,
        min_interval: float = 1.0,
        history: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fetch = fetch  # set once the gateway listens (fngate serve starts it after the API)
        self.ready_counts = ready_counts
        self.in_flight_counts = in_flight_counts
        self.min_interval = min_interval
        self.history = history
        self.clock = clock
        self.readings: deque[Reading] = deque()
        self.last_error = ""
        self._lock = asyncio.Lock()

    async def read(self) -> None:
        """Take a reading unless the newest one is younger than min_interval."""
        async with self._lock:
            now = self.clock()
            if self.readings and now - self.readings[-1].at < self.min_interval:
                return
            gateway: Exposition | None = None
            if self.fetch is None:
                self.last_error = "the gateway is not running yet"
            else:
                try:
                    gateway = Exposition.parse(await self.fetch())
                    self.last_error = ""
                except (OSError, TimeoutError, ExpositionError) as exc:
                    self.last_error = f"cannot read the gateway's metrics: {exc or type(exc).__name__}"
                except Exception as exc:  # an HTTP client error of whatever kind the fetch uses
                    self.last_error = f"cannot read the gateway's metrics: {type(exc).__name__}: {exc}"
            ready = await self.ready_counts() if self.ready_counts is not None else {}
            in_flight = self.in_flight_counts() if self.in_flight_counts is not None else {}
            self.readings.append(Reading(now, gateway, ready, in_flight))
            while self.readings and now - self.readings[0].at > self.history:
                self.readings.popleft()

    def pairs(self) -> list[tuple[Reading, Reading]]:
        seen = [r for r in self.readings if r.gateway is not None]
        return list(itertools.pairwise(seen))

    def gateway_points(self) -> list[dict[str, Any]]:
        points = []
        for before, now in self.pairs():
            assert before.gateway is not None and now.gateway is not None  # pairs() keeps only answered readings
            g0, g1, dt = before.gateway, now.gateway, now.at - before.at
            hist = _bucket_delta(g1.buckets("fngate_request_duration_seconds"), g0.buckets("fngate_request_duration_seconds"))
            points.append(
                {
                    "t": round(now.at, 3),
                    "dt": round(dt, 3),  # seconds since the previous reading: rate x dt = count
                    "rps": _round(_delta(g1.total("fngate_requests_total"), g0.total("fngate_requests_total")) / dt, 3),
                    "p50": _round(quantile(0.5, hist)),
                    "p99": _round(quantile(0.99, hist)),
                    "inFlight": g1.total("fngate_in_flight_requests"),
                    "sseOpen": g1.total("fngate_sse_streams_open"),
                    "queueDepth": g1.total("fngate_queue_depth"),
                    "upstreamErrorsPerSecond": _round(
                        _delta(g1.total("fngate_upstream_errors_total"), g0.total("fngate_upstream_errors_total")) / dt, 3
                    ),
                }
            )
        return points

    def function_points(self, function_id: str, version_ids: Sequence[str]) -> list[dict[str, Any]]:
        points = []
        for before, now in self.pairs():
            assert before.gateway is not None and now.gateway is not None
            g0, g1, dt = before.gateway, now.gateway, now.at - before.at
            http_now = g1.by("fngate_requests_total", "status", function_id=function_id)
            http_before = g0.by("fngate_requests_total", "status", function_id=function_id)
            grpc_now = g1.by("fngate_grpc_calls_total", "grpc_status", function_id=function_id)
            grpc_before = g0.by("fngate_grpc_calls_total", "grpc_status", function_id=function_id)
            # fngate_requests_total counts every call, gRPC ones too (status 200 when the instance
            # answered); fngate_grpc_calls_total adds the grpc-status those 200s carried
            answered = {s: _delta(n, http_before.get(s, 0.0)) for s, n in http_now.items()}
            grpc = {s: _delta(n, grpc_before.get(s, 0.0)) for s, n in grpc_now.items()}
            served = sum(answered.values())
            errors = {s: round(n / dt, 3) for s, n in sorted(answered.items()) if s.isdigit() and int(s) >= 400 and n > 0}
            errors.update({f"grpc {s}": round(n / dt, 3) for s, n in sorted(grpc.items()) if s != "OK" and n > 0})
            # the function's own histogram: every call of it, HTTP and gRPC, head to response end
            hist = _bucket_delta(
                g1.buckets("fngate_request_duration_seconds", function_id=function_id),
                g0.buckets("fngate_request_duration_seconds", function_id=function_id),
            )
            # in flight per function: the gateways' load reports (what fngate_version_in_flight on the
            # control plane's /metrics shows), else its gRPC streams, else the gateway-wide gauge
            reported = [now.in_flight[v] for v in version_ids if v in now.in_flight]
            streams = g1.by("fngate_grpc_active_streams", "function_id").get(function_id)
            in_flight = sum(reported) if reported else streams
            points.append(
                {
                    "t": round(now.at, 3),
                    "dt": round(dt, 3),
                    "rps": round(served / dt, 3),
                    "errors": errors,
                    # no latency for an interval in which this function answered nothing
                    "p50": _round(quantile(0.5, hist)) if served else None,
                    "p99": _round(quantile(0.99, hist)) if served else None,
                    "latencyScope": "function",
                    "inFlight": in_flight if in_flight is not None else g1.total("fngate_in_flight_requests"),
                    "inFlightScope": "function" if in_flight is not None else "gateway",
                    "queueDepth": sum(g1.total("fngate_queue_depth", version_id=v) for v in version_ids),
                    "readyInstances": sum(now.ready.get(v, 0) for v in version_ids),
                }
            )
        return points
