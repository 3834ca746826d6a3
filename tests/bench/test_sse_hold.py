"""The SSE holding benchmark against a real gateway and the real `fngate/sse` sample, 50 streams.

What the benchmark reports must be what happened: every stream counted as held is open
at the instance, an HTTP/2 stream costs the gateway one descriptor and an HTTP/1.1
stream two (the figure that decides how many streams fit under the open-files limit),
and a stream the gateway refuses is not counted.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from fngate.bench import sse
from fngate.bench.fngate import invoke_headers
from fngate.bench.procs import layouts
from fngate.bench.runner import Settings, run_async

STREAMS = 50
# the gateway's own descriptors: listeners, event loop, stdio, the routing table file
OWN_DESCRIPTORS = 40
MIB = sse.MIB


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(runs=1, sse_streams=STREAMS, work=tmp_path, logs=tmp_path)


def vm_rss(pid: int) -> int:
    """A process's resident set from /proc/<pid>/status, read independently of the benchmark."""
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize(
    ("transport", "descriptors_per_stream", "connections"),
    [(sse.HTTP2, 1, 1), pytest.param(sse.HTTP1, 2, STREAMS, marks=pytest.mark.slow)],
)
def test_held_streams_are_open_at_the_instance(settings, transport, descriptors_per_stream, connections):
    with contextlib.ExitStack() as stack:
        port, gateway = sse._start(stack, settings, layouts()["iso"], transport.replace("/", ""), STREAMS)
        rss_before = vm_rss(gateway.proc.pid)
        holder = sse._hold_http2 if transport == sse.HTTP2 else sse._hold_http1
        result = run_async(holder(gateway.port, port, invoke_headers("sse"), STREAMS, gateway))
        rss_after = vm_rss(gateway.proc.pid)  # the streams were just closed; the heap is not trimmed
    assert (result["held"], result["asked"], result["errors"]) == (STREAMS, STREAMS, 0), result["error_kinds"]
    assert result["connections"] == connections
    assert result["instance_active"] == STREAMS
    floor = STREAMS * descriptors_per_stream
    assert floor <= result["gateway_fds"] < floor + OWN_DESCRIPTORS
    # the memory figures are the gateway's own (what /proc says of its process), before and
    # while holding, and the per-stream cost is the one they give
    assert abs(result["rss_before_mib"] * MIB - rss_before) < MIB, (result["rss_before_mib"], rss_before / MIB)
    assert abs(result["rss_after_mib"] * MIB - rss_after) < 2 * MIB, (result["rss_after_mib"], rss_after / MIB)
    growth = (result["rss_after_mib"] - result["rss_before_mib"]) * MIB
    assert result["kib_per_stream"] == pytest.approx(growth / 1024 / STREAMS)


def test_streams_the_gateway_refuses_are_not_counted(settings):
    wrong_function = {**invoke_headers("sse"), "function-id": "00000000-0000-4000-8000-000000000000"}
    with contextlib.ExitStack() as stack:
        port, gateway = sse._start(stack, settings, layouts()["iso"], "refused", STREAMS)
        result = run_async(sse._hold_http2(gateway.port, port, wrong_function, STREAMS, gateway))
    assert result["held"] == 0 and result["instance_active"] == 0
    assert result["error_kinds"] == {"status 404": STREAMS}
