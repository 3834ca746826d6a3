"""The bench's tracing-on row (--tracing): the option exists, and the system under test of
that row, a gateway process with tracing and the access log on exporting to the bench's
OTLP sink, answers a request and exports its spans and log line. No load, nothing timed:
the bench has no dry mode, so the row's parts are checked one request at a time."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from fngate.bench.__main__ import parse_args
from fngate.bench.fngate import GatewayProcess, Upstream, invoke_headers
from fngate.bench.procs import PYTHON, Proc, free_port, wait_port
from fngate.bench.scenarios import traced_options


class _Small(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"small")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_option_exists_and_defaults_off() -> None:
    assert parse_args(["--tracing"]).tracing is True
    assert parse_args([]).tracing is False


def test_the_traced_gateway_exports_to_the_sink_and_logs(tmp_path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Small)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    otlp_port = free_port()
    sink = Proc("otlp-sink", [PYTHON, "-m", "fngate.bench.otlp_sink", "--port", str(otlp_port)], None, tmp_path)
    gateway = None
    try:
        wait_port(otlp_port, proc=sink)
        upstream_port = upstream.server_address[1]
        gateway = GatewayProcess(
            [Upstream("static", "127.0.0.1", upstream_port)], None, tmp_path, tmp_path, observe=traced_options(otlp_port, tmp_path)
        )
        r = httpx.get(f"http://127.0.0.1:{gateway.port}/small", headers=invoke_headers("static"), timeout=10)
        assert r.status_code == 200 and r.text == "small"
        deadline = time.monotonic() + 20  # the SDK's batch goes out within its schedule delay (5 s)
        while httpx.get(f"http://127.0.0.1:{otlp_port}/stats").json()["requests"] == 0:
            assert time.monotonic() < deadline, "no spans reached the sink"
            time.sleep(0.2)
        [line] = [json.loads(x) for x in (tmp_path / "fngate-access.log").read_text().splitlines()]
        assert line["status"] == 200 and line["request_id"] == r.headers["nvcf-reqid"]
    finally:
        if gateway is not None:
            gateway.stop()
        sink.stop()
        upstream.shutdown()
