"""Stopping `fngate serve` (a real subprocess, real sample instances): SIGTERM stops
accepting, lets the requests in flight finish and says what it waits for; a second
signal stops at once."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import pytest

from tests.e2e.helpers import alive, instance_pid, write_config
from tests.support.serve_api import ServeApi
from tests.support.waiting import wait_until


@pytest.fixture
def api(fngate_serve, tmp_path):
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])
    return ServeApi(fngate_serve("--config", str(config), "--drain-timeout", "20"))


def _in_background(fn):
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as exc:  # the assertion below reports it
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _in_flight(api: ServeApi) -> float:
    text = httpx.get(f"http://127.0.0.1:{api.sp.ready['admin_port']}/metrics").text
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("fngate_in_flight_requests ")))


def _sse_events(api: ServeApi, fid: str, tokens: int, interval: float) -> list[str]:
    headers = {**api.headers, "function-id": fid}
    body = {"stream": True, "tokens": tokens, "interval": interval}
    events = []
    with httpx.stream("POST", api.gateway + "/v1/chat/completions", headers=headers, json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    return events


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_sigterm_lets_a_slow_request_and_a_stream_finish_and_says_what_it_waits_for(api):
    echo_fid, echo_vid = api.create("stop-echo")
    sse_fid, sse_vid = api.create("stop-sse", image="fngate/sse", inferenceUrl="/v1/chat/completions")
    api.deploy(echo_fid, echo_vid)
    api.deploy(sse_fid, sse_vid)
    api.wait_status(echo_fid, echo_vid, "ACTIVE")
    api.wait_status(sse_fid, sse_vid, "ACTIVE")
    [inst] = api.ready_instances(echo_fid, echo_vid)
    echo_pid = instance_pid(api.sp.data_dir, echo_vid, inst["instanceId"])

    slow_thread, slow = _in_background(lambda: api.invoke(echo_fid, "/echo?delay=4", content=b"x" * 1000))
    sse_thread, sse = _in_background(lambda: _sse_events(api, sse_fid, tokens=80, interval=0.05))
    api.wait(lambda: _in_flight(api) == 2, "both requests in flight")
    api.sp.proc.send_signal(signal.SIGTERM)
    api.wait(lambda: "draining 1 request, 1 stream" in api.sp.output(), "the drain message")
    assert _refuses_connections(api.sp.ready["http_port"]), "a stopping gateway still accepts connections"
    assert alive(echo_pid), "the instance was stopped before the gateway drained"

    slow_thread.join(30)
    sse_thread.join(30)
    assert "error" not in slow, f"the slow request failed: {slow.get('error')!r}"
    r = slow["value"]
    assert r.status_code == 200 and r.json()["bodySize"] == 1000, (r.status_code, r.text)
    assert "error" not in sse, f"the stream failed: {sse.get('error')!r}"
    assert len(sse["value"]) == 81 and sse["value"][-1] == "[DONE]", f"the stream was cut after {len(sse['value'])} events"
    assert api.sp.proc.wait(20) == 0
    assert not alive(echo_pid)
    out = api.sp.output()
    assert out.index("draining 1 request, 1 stream") < out.index("gateway drained")


def test_a_second_signal_stops_at_once(api):
    fid, vid = api.create("stop-now")
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    [inst] = api.ready_instances(fid, vid)
    pid = instance_pid(api.sp.data_dir, vid, inst["instanceId"])
    slow_thread, slow = _in_background(lambda: api.invoke(fid, "/echo?delay=60"))
    api.wait(lambda: _in_flight(api) == 1, "the request in flight")
    api.sp.proc.send_signal(signal.SIGTERM)
    api.wait(lambda: "draining 1 request" in api.sp.output(), "the drain message")
    started = time.monotonic()
    api.sp.proc.send_signal(signal.SIGINT)
    api.sp.proc.wait(10)
    assert time.monotonic() - started < 6, "the second signal did not stop fngate at once"
    assert "stopping at once" in api.sp.output()
    wait_until(lambda: not alive(pid), 10, "the instance to stop")
    slow_thread.join(10)
    assert "error" in slow or slow["value"].status_code != 200, "the cut request must not look like a success"


def test_with_workers_sigterm_lets_the_slow_request_finish_and_reports_it(fngate_serve, tmp_path):
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])
    api = ServeApi(fngate_serve("--config", str(config), "--workers", "2"))
    fid, vid = api.create("stop-workers")
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    api.wait(lambda: api.invoke(fid).status_code == 200, "both workers routing")
    slow_thread, slow = _in_background(lambda: api.invoke(fid, "/echo?delay=3"))
    time.sleep(1.0)  # a load report (every 0.5 s) carries it to the parent
    api.sp.proc.send_signal(signal.SIGTERM)
    api.wait(lambda: "draining 1 request" in api.sp.output(), "the drain message")
    slow_thread.join(30)
    assert "error" not in slow and slow["value"].status_code == 200, slow
    assert api.sp.proc.wait(20) == 0
