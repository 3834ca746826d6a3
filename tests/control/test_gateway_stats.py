"""The console's numbers, from the text the gateway's real renderers produce (proxy/calls/metrics.py,
proxy/grpc/metrics.py, and the --workers parent's merge in proxy/ops/worker_admin.py)."""

from __future__ import annotations

import math

import pytest

from fngate.control.gateway_stats import GatewayStats
from fngate.control.promtext import Exposition, ExpositionError, parse_line, quantile
from fngate.proxy.calls.metrics import Metrics
from fngate.proxy.grpc.metrics import GrpcMetrics
from fngate.proxy.grpc.protocol import Status
from fngate.proxy.ops.worker_admin import merge_metrics

FID, OTHER = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def test_lines_with_escaped_labels_exponents_and_infinity() -> None:
    assert parse_line('a_total{x="q\\"uote",y="new\\nline"} 1.5e3') == ("a_total", (("x", 'q"uote'), ("y", "new\nline")), 1500.0)
    assert parse_line("b 7") == ("b", (), 7.0)
    assert parse_line('c_bucket{le="+Inf"} 3 1700000000000')[2] == 3.0
    assert math.isnan(parse_line("d NaN")[2])
    for bad in ("novalue", 'e{x="unterminated} 1', "f{x=1} 2", "g abc"):
        with pytest.raises(ExpositionError):
            parse_line(bad)


def test_quantile_interpolates_as_histogram_quantile() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * (20 / 40))
    assert quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * (9 / 10))
    assert quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0  # in the +Inf bucket: the highest finite bound


def _text(m: Metrics, depth: dict[str, int] | None = None, grpc: GrpcMetrics | None = None) -> str:
    return m.render(depth or {}).decode() + (grpc.render() if grpc else "")


async def test_rates_errors_and_latency_per_function_from_two_readings() -> None:
    m, grpc = Metrics(), GrpcMetrics()
    texts: list[str] = []
    clock = [1000.0]

    async def fetch() -> str:
        return texts[-1]

    async def ready() -> dict[str, int]:
        return {"v1": 2, "v2": 1}

    stats = GatewayStats(fetch, ready, min_interval=1.0, clock=lambda: clock[0])
    texts.append(_text(m))
    await stats.read()
    for _ in range(18):
        m.observe(FID, 200, 0.004)
    m.observe(FID, 503, 0.2)
    m.observe(FID, 500, 0.3)
    for _ in range(30):  # another function's slow calls do not move this one's latency
        m.observe(OTHER, 200, 8.0)
    m.in_flight = 3
    texts.append(_text(m, {"v1": 4, "v2": 1, "other-version": 9}))
    clock[0] += 2.0
    await stats.read()
    [point] = stats.function_points(FID, ["v1", "v2"])
    assert point["rps"] == pytest.approx(20 / 2.0)
    assert point["errors"] == {"500": 0.5, "503": 0.5}
    assert point["queueDepth"] == 5  # its two versions, not the other function's queue
    assert point["readyInstances"] == 3
    assert point["inFlight"] == 3 and point["inFlightScope"] == "gateway"
    assert point["latencyScope"] == "function"
    assert 0.0025 < point["p50"] <= 0.005  # most answered in the 2.5-5 ms bucket
    assert 0.1 < point["p99"] <= 0.5  # not the other function's 8 s
    [gateway] = stats.gateway_points()
    assert gateway["rps"] == pytest.approx(50 / 2.0) and gateway["queueDepth"] == 14
    assert gateway["p50"] > 5.0  # the gateway-wide histogram sums every function

    # a gRPC function: its calls' latency, and its in-flight streams
    for _ in range(3):
        grpc.started(OTHER)
    for status in (Status.OK, Status.UNAVAILABLE):  # the instance's answers; one call still open
        grpc.finished(OTHER, status, 0.02)
        m.observe(OTHER, 200, 0.02)  # a gRPC call counts in the request metrics too (200: the instance answered)
    texts.append(_text(m, grpc=grpc))
    clock[0] += 0.5
    await stats.read()  # younger than min_interval: no new reading
    assert len(stats.function_points(OTHER, [])) == 1
    clock[0] += 1.5
    await stats.read()
    last = stats.function_points(OTHER, [])[-1]
    assert last["rps"] == pytest.approx(2 / 2.0) and last["errors"] == {"grpc UNAVAILABLE": 0.5}
    assert last["latencyScope"] == "function" and 0.01 < last["p50"] <= 0.025
    assert last["inFlight"] == 1 and last["inFlightScope"] == "function"
    idle = stats.function_points(FID, ["v1"])[-1]
    assert idle["rps"] == 0 and idle["p50"] is None and idle["p99"] is None  # nothing answered: no latency


async def test_workers_are_summed_and_a_restarted_worker_is_a_counter_reset() -> None:
    w0, w1 = Metrics(), Metrics()
    for _ in range(10):
        w0.observe(FID, 200, 0.01)
        w1.observe(FID, 200, 0.01)
    texts = [merge_metrics([("gw-0", _text(w0)), ("gw-1", _text(w1))])]
    clock = [0.0]

    async def fetch() -> str:
        return texts[-1]

    stats = GatewayStats(fetch, clock=lambda: clock[0])
    await stats.read()
    assert Exposition.parse(texts[-1]).total("fngate_requests_total", function_id=FID) == 20
    restarted = Metrics()  # worker 1 came back with fresh counters
    for _ in range(4):
        w0.observe(FID, 200, 0.01)
        restarted.observe(FID, 200, 0.01)
    texts.append(merge_metrics([("gw-0", _text(w0)), ("gw-1", _text(restarted))]))
    clock[0] = 2.0
    await stats.read()
    [point] = stats.function_points(FID, [])
    # the summed counter went from 20 to 18: read as a reset (18 new), never as a negative rate
    assert point["rps"] == pytest.approx(18 / 2.0)


async def test_an_unreachable_gateway_is_reported_not_raised() -> None:
    async def fetch() -> str:
        raise ConnectionRefusedError("connection refused")

    stats = GatewayStats(fetch, clock=lambda: 0.0)
    await stats.read()
    assert "connection refused" in stats.last_error
    assert stats.gateway_points() == []
    idle = GatewayStats()
    await idle.read()
    assert idle.last_error == "the gateway is not running yet"


async def test_in_flight_per_function_comes_from_the_load_reports_when_there_are_some() -> None:
    m = Metrics()
    m.in_flight = 7  # gateway-wide: every function together
    clock = [0.0]
    reported: dict[str, int] = {}

    async def fetch() -> str:
        return _text(m)

    stats = GatewayStats(fetch, in_flight_counts=lambda: dict(reported), clock=lambda: clock[0])
    await stats.read()
    clock[0] = 1.0
    await stats.read()
    last = stats.function_points(FID, ["v1"])[-1]
    assert (last["inFlight"], last["inFlightScope"]) == (7, "gateway")  # no report for its version yet
    reported.update(v1=2, v2=1, other=4)
    clock[0] = 2.0
    await stats.read()
    last = stats.function_points(FID, ["v1", "v2"])[-1]
    assert (last["inFlight"], last["inFlightScope"]) == (3, "function")
