"""Server-side series for a load run: fngate's own /metrics, scraped while Locust runs.

Locust sees the run from the client; the server's view explains it (a latency rise that
is a queue building up, an instance the autoscaler added). `ServerScraper` reads, every
`interval` seconds on a thread of its own, the gateway's admin `/metrics` (each replica's)
and the control plane's `/metrics` on the API port (it takes a key), and keeps these series:

  queue_depth        requests waiting for an instance slot (fngate_queue_depth, summed)
  in_flight          requests holding an instance slot (fngate_in_flight_requests, summed)
  ready_instances    instances ready to serve (nvcf_function_instances_current, the run's functions)
  requests_per_s     requests the gateway answered per second (fngate_requests_total)
  responses_429_per_s  of which 429 (queue full or rate limited)

After Locust stops, one more reading waits (up to `settle_timeout`) for the in-flight count to
reach zero: NVCF's HTTP SLI guide reads pending requests above zero at steady state between
tests as pressure, so `settled` is that reading. Nothing here imports Locust.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

SERIES = ("queue_depth", "in_flight", "ready_instances", "requests_per_s", "responses_429_per_s")
COUNTER_SERIES = ("requests_per_s", "responses_429_per_s")  # rates of counters: their `total` is the increase
DEFAULT_INTERVAL = 1.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (comments and malformed lines skipped)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if m is None:
            continue
        try:
            value = float(m[3])
        except ValueError:
            continue
        out.append(Sample(m[1], dict(_LABEL.findall(m[2] or "")), value))
    return out


def total(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """The sum of the series `name` whose labels match; None when there is no such series."""
    values = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where the server's metrics are: gateway admin /metrics URLs, and the API's /metrics with a key."""

    gateway_urls: tuple[str, ...] = ()
    api_url: str = ""  # the control plane's /metrics (ready instances)
    api_key: str = ""
    function_ids: tuple[str, ...] = ()  # ready_instances counts these functions' instances (empty: all)

    def __bool__(self) -> bool:
        return bool(self.gateway_urls or self.api_url)


def _get(url: str, key: str = "", timeout: float = 5.0) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        return resp.read().decode("utf-8", "replace")


@dataclasses.dataclass
class Reading:
    """One scrape: gauges as read, counters as running totals (rates come from two readings)."""

    at: float
    queue_depth: float | None = None
    in_flight: float | None = None
    ready_instances: float | None = None
    requests_total: float | None = None
    responses_429_total: float | None = None


def read(sources: Sources) -> tuple[Reading, int]:
    """One reading of every source; the number of sources that could not be read."""
    reading = Reading(time.time())
    errors = 0
    gateway: list[Sample] = []
    for url in sources.gateway_urls:
        try:
            gateway += parse(_get(url))
        except OSError:
            errors += 1
    if sources.gateway_urls and len(gateway):
        reading.queue_depth = total(gateway, "fngate_queue_depth") or 0.0
        reading.in_flight = total(gateway, "fngate_in_flight_requests") or 0.0
        reading.requests_total = total(gateway, "fngate_requests_total") or 0.0
        reading.responses_429_total = total(gateway, "fngate_requests_total", status="429") or 0.0
    if sources.api_url:
        try:
            api = parse(_get(sources.api_url, sources.api_key))
        except OSError:
            errors += 1
        else:
            ids = sources.function_ids or (None,)
            found = [total(api, "nvcf_function_instances_current", **({"function_id": f} if f else {})) for f in ids]
            reading.ready_instances = sum(v or 0.0 for v in found)
    return reading, errors


class ServerScraper:
    """Scrapes `sources` every `interval` seconds from start() to stop(), on a daemon thread."""

    def __init__(self, sources: Sources, interval: float = DEFAULT_INTERVAL, settle_timeout: float = 15.0) -> None:
        self.sources = sources
        self.interval = interval
        self.settle_timeout = settle_timeout
        self.readings: list[Reading] = []
        self.errors = 0
        self.settled: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._scrape()
        self._thread = threading.Thread(target=self._loop, name="server-metrics", daemon=True)
        self._thread.start()

    def _scrape(self) -> Reading:
        reading, errors = read(self.sources)
        self.errors += errors
        self.readings.append(reading)
        return reading

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._scrape()

    def stop(self) -> None:
        """Stop scraping, then read until nothing is in flight (or `settle_timeout` passed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 10)
        deadline = time.monotonic() + self.settle_timeout
        while True:
            reading, _ = read(self.sources)
            self.settled = reading.in_flight
            if reading.in_flight is None or reading.in_flight <= 0 or time.monotonic() >= deadline:
                return
            time.sleep(min(self.interval, 0.5))

    def report(self) -> dict[str, Any]:
        return series_report(self.readings, self.interval, self.errors, self.settled, self.sources)


def series_report(readings: list[Reading], interval: float, errors: int = 0, settled: float | None = None,
                  sources: Sources | None = None) -> dict[str, Any]:  # fmt: skip
    """The series over the run (seconds from the first reading) and each one's figures."""
    if not readings:
        return {"interval_s": interval, "seconds": [], "series": {}, "stats": {}, "scrape_errors": errors}
    t0 = readings[0].at
    seconds = [round(r.at - t0, 3) for r in readings]
    series: dict[str, list[float | None]] = {
        "queue_depth": [r.queue_depth for r in readings],
        "in_flight": [r.in_flight for r in readings],
        "ready_instances": [r.ready_instances for r in readings],
        "requests_per_s": _rates(readings, "requests_total"),
        "responses_429_per_s": _rates(readings, "responses_429_total"),
    }
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    stats = {name: series_stats(values, seconds) for name, values in series.items()}
    for name, field in (("requests_per_s", "requests_total"), ("responses_429_per_s", "responses_429_total")):
        if name in stats:
            stats[name]["total"] = _increase(readings, field)
    if "in_flight" in stats:
        stats["in_flight"]["settled"] = settled
    doc: dict[str, Any] = {"interval_s": interval, "started_at": t0, "seconds": seconds, "series": series, "stats": stats,
                           "scrape_errors": errors}  # fmt: skip
    if sources is not None:
        doc["sources"] = {"gateway": list(sources.gateway_urls), "api": sources.api_url}
    return doc


def _rates(readings: list[Reading], field: str) -> list[float | None]:
    out: list[float | None] = [None]
    for prev, cur in itertools.pairwise(readings):
        a, b = getattr(prev, field), getattr(cur, field)
        dt = cur.at - prev.at
        out.append(None if a is None or b is None or dt <= 0 else max(b - a, 0.0) / dt)  # a restart resets a counter
    return out


def _increase(readings: list[Reading], field: str) -> float:
    """What a counter grew by over the run (a drop, a restarted process, counts from zero)."""
    values = [v for r in readings if (v := getattr(r, field)) is not None]
    return sum(b - a if b >= a else b for a, b in itertools.pairwise(values))


def series_stats(values: list[float | None], seconds: list[float]) -> dict[str, float | int | None]:
    """max, min, mean, last; rises/falls: how often the value went up/down (an autoscaler's
    steps, for ready_instances). Rates also get `total` (series_report): the counter's increase."""
    points = [(t, v) for t, v in zip(seconds, values, strict=True) if v is not None]
    if not points:
        return {"max": None, "min": None, "mean": None, "last": None, "rises": 0, "falls": 0}
    vals = [v for _, v in points]
    rises = sum(1 for a, b in itertools.pairwise(vals) if b > a)
    falls = sum(1 for a, b in itertools.pairwise(vals) if b < a)
    out: dict[str, float | int | None] = {
        "max": max(vals),
        "min": min(vals),
        "mean": sum(vals) / len(vals),
        "last": vals[-1],
        "rises": rises,
        "falls": falls,
    }
    return out
