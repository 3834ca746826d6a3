"""Load generators: wrk for HTTP/1.1, h2load for h2c and gRPC. Each run returns a Sample.

wrk prints its figures as JSON through a small Lua `done` hook (latency in µs). h2load
has no percentiles, so it writes a per-request log (start, status, duration in µs) and
p50/p99 are computed from it. The load generator's own CPU comes from wait4's rusage.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fngate.bench.procs import ROOT, pinned

WRK_LUA = """-- fngate bench: print wrk's figures as one JSON line
wrk.method = "{method}"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Sample:
    """One run of one load generator against one target."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    load_cpu: float  # cores the load generator used
    sut_cpu: float = 0.0  # cores the system under test used (filled in by the runner)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise RuntimeError(f"{tool} is not installed: run `make bench` as root, or apt-get install {package}")
    return path


def _run_measured(cmd: list[str], timeout: float) -> tuple[str, float, int]:
    """Run cmd to completion; return its output, wall seconds and exit status."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise RuntimeError(f"{cmd[0]} did not finish within {timeout:.0f} s:\n{out.decode(errors='replace')[-2000:]}") from None
    # communicate() already reaped it; rusage of reaped children is in RUSAGE_CHILDREN
    wall = time.monotonic() - t0
    return out.decode(errors="replace"), wall, proc.returncode


class _ChildCpu:
    """CPU used by children reaped between enter and exit (the load generator)."""

    def __enter__(self) -> _ChildCpu:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu0, self._t0 = r.ru_utime + r.ru_stime, time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cores = (r.ru_utime + r.ru_stime - self._cpu0) / max(time.monotonic() - self._t0, 1e-9)


def wrk(
    url: str, *, connections: int, duration: float, cpus: str | None, work: Path, headers: dict[str, str] | None = None, method: str = "GET"
) -> Sample:
    """`wrk -t1 -cN -dS` with a Lua hook that reports percentiles as JSON."""
    binary = require("wrk", "wrk")
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    script = work / "wrk-report.lua"
    script.write_text(WRK_LUA.format(method=method, headers=lines))
    cmd = pinned([binary, "-t1", f"-c{connections}", f"-d{max(duration, 1):.0f}s", "--timeout", "10s", "-s", str(script), url], cpus)
    with _ChildCpu() as child:
        out, _wall, rc = _run_measured(cmd, timeout=duration + 60)
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if rc != 0 or line is None:
        raise RuntimeError(f"wrk failed ({rc}):\n{out[-2000:]}")
    doc = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = doc["duration_us"] / 1e6
    errors = sum(doc["errors"].values())
    return Sample(
        requests=doc["requests"],
        seconds=seconds,
        rps=doc["requests"] / seconds,
        p50_ms=doc["p50_us"] / 1000,
        p99_ms=doc["p99_us"] / 1000,
        errors=errors,
        load_cpu=child.cores,
        extra={"bytes": doc["bytes"], "errors": doc["errors"]},
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[idx]


def h2load(
    url: str,
    *,
    clients: int,
    streams: int,
    duration: float,
    cpus: str | None,
    work: Path,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    warmup: float = 1.0,
) -> Sample:
    """`h2load -t1 -cN -mM -D S` over h2c (prior knowledge); p50/p99 from the request log."""
    binary = require("h2load", "nghttp2-client")
    log = work / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = [binary, "-t1", f"-c{clients}", f"-m{streams}", "-D", f"{max(duration, 1):.0f}", "--log-file", str(log)]
    if warmup > 0:
        cmd += ["--warm-up-time", f"{max(int(warmup * 1000), 1)}ms"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if body is not None:
        body_path = work / "h2load.body"
        body_path.write_bytes(body)
        cmd += ["-d", str(body_path)]
    cmd.append(url)
    with _ChildCpu() as child:
        out, _wall, rc = _run_measured(pinned(cmd, cpus), timeout=duration + warmup + 60)
    done = succeeded = 0
    for ln in out.splitlines():
        ln = ln.strip()
        if ln.startswith("requests:"):
            parts = {v: k for k, v in (p.strip().split(" ", 1) for p in ln.removeprefix("requests:").split(","))}
            done, succeeded = int(parts["done"]), int(parts["succeeded"])
    if rc != 0 or done == 0:
        raise RuntimeError(f"h2load failed ({rc}):\n{out[-2000:]}")
    durations: list[int] = []
    not_ok, first, last = 0, None, None
    for ln in log.read_text().splitlines():
        start_us, status, dur_us = ln.split("\t")[:3]
        if status == "0":  # cut off by the end of the run (-D), not answered
            continue
        start, dur = int(start_us), int(dur_us)
        durations.append(dur)
        not_ok += not status.startswith("2")
        end = start + dur
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
    durations.sort()
    seconds = max((last - first) / 1e6, 1e-9) if first is not None and last is not None else duration
    return Sample(
        requests=len(durations),
        seconds=seconds,
        rps=len(durations) / seconds,
        p50_ms=percentile(durations, 50) / 1000,
        p99_ms=percentile(durations, 99) / 1000,
        errors=(done - succeeded) + not_ok,
        load_cpu=child.cores,
        extra={"h2load_done": done},
    )
