"""`fngate loadtest llm` against an OpenAI-compatible server (tests/loadtests/openai_stub.py:
NVCF's `llm.<domain>` Host and `<functionId>/<model>` routing, SSE chunks and JSON
completions), the same run on the local stack through the gateway's own LLM endpoints
and the fngate/llm sample, and the server-side series every report gets from fngate's
/metrics."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from fngate.loadtests import server_metrics as sm
from fngate.loadtests.slis import evaluate_series

from .conftest import _start
from .test_smoke import PNG, fngate_loadtest, lenient_rules, write_slis

FID = "00000000-0000-4000-8000-000000000001"  # the stub's default routing key


@pytest.fixture(scope="module")
def openai_stub(tmp_path_factory):
    sample = _start("tests.loadtests.openai_stub", tmp_path_factory.mktemp("openai"))
    try:
        yield sample
    finally:
        sample.proc.terminate()
        sample.proc.wait(timeout=10)


def test_llm_scenario_reports_ttft_gaps_and_tokens_with_the_server_series(openai_stub, tmp_path: Path):
    results = tmp_path / "llm"
    slis = write_slis(tmp_path / "slis.yaml", lenient_rules())
    done = fngate_loadtest("llm", "--target", openai_stub.url, "--llm-function-id", FID, "--model", "fngate-llm",
                           "--users", "2", "--stream-length", "12", "--duration", "3s", "--metrics-url", f"{openai_stub.url}/metrics",
                           "--scrape-interval", "0.5", "--slis", str(slis), "--results", str(results))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((results / "summary.json").read_text())
    entries = {e["name"]: e for e in doc["entries"] if e["type"] == "LLM"}
    assert set(entries) == {"chat: ttft", "chat: itl", "chat: tpot", "chat: stream", "chat: completion"}
    stream, completion = entries["chat: stream"], entries["chat: completion"]
    # the stub refuses a wrong Host or model with 400: every call succeeding means both were NVCF's
    assert stream["requests"] > 0 and completion["requests"] > 0
    assert stream["success_rate"] == 1.0 and completion["success_rate"] == 1.0
    assert entries["chat: itl"]["requests"] >= 10 * stream["requests"]  # 11 gaps in each 12-token stream
    tokens = doc["tokens"]
    assert tokens["output_tokens"] == 12 * (stream["requests"] + completion["requests"])  # usage.completion_tokens
    assert tokens["tokens_per_s"] > 0 and tokens["stream_tokens_per_s_p50"] > 0 and tokens["ttft_p95_ms"] > 0
    assert doc["settings"]["model"] == f"{FID}/fngate-llm" and doc["settings"]["stream"] == "both"
    server = doc["server"]
    assert len(server["seconds"]) >= 4 and server["scrape_errors"] == 0
    # (in flight is a gauge: a scrape may land between two short calls, so only its presence is checked)
    assert server["stats"]["requests_per_s"]["total"] > 0 and server["stats"]["in_flight"]["max"] is not None
    assert server["stats"]["in_flight"]["settled"] == 0
    verdicts = {(t["entry"], t["metric"]): t for t in doc["thresholds"]}
    assert verdicts[("server in_flight", "settled")]["passed"]
    for name in ("latency.png", "throughput.png", "server.png"):
        assert (results / name).read_bytes().startswith(PNG), name
    md = (results / "summary.md").read_text()
    assert "## Tokens" in md and "## Server-side series (fngate /metrics)" in md and "`server.png`" in md


def test_llm_scenario_streaming_only_needs_no_completion_entry(openai_stub, tmp_path: Path):
    results = tmp_path / "llm"
    done = fngate_loadtest("llm", "--target", openai_stub.url, "--llm-function-id", FID, "--stream", "true", "--users", "1",
                           "--stream-length", "4", "--duration", "2s", "--slis", str(write_slis(tmp_path / "s.yaml", lenient_rules())),
                           "--results", str(results))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((results / "summary.json").read_text())
    assert "LLM chat: completion" not in {t["entry"] for t in doc["thresholds"]}
    assert doc["server"]["seconds"] == [] and "no metrics source" in doc["server"]["note"]  # no --metrics-url: said so
    assert "Server-side SLIs not checked" in (results / "summary.md").read_text()


def test_llm_scenario_on_the_local_stack_calls_the_gateways_llm_endpoints(tmp_path: Path):
    results = tmp_path / "llm"
    done = fngate_loadtest("llm", "--duration", "6s", "--users", "2", "--stream-length", "8", "--scrape-interval", "0.5",
                           "--slis", str(write_slis(tmp_path / "s.yaml", lenient_rules())), "--results", str(results), timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((results / "summary.json").read_text())
    entries = {e["name"]: e for e in doc["entries"] if e["type"] == "LLM"}
    assert entries["chat: stream"]["requests"] > 0 and entries["chat: stream"]["success_rate"] == 1.0
    assert entries["chat: completion"]["requests"] > 0 and entries["chat: completion"]["success_rate"] == 1.0
    assert doc["tokens"]["output_tokens"] > 0 and doc["settings"]["model"].endswith("/fngate-llm")
    # the gateway counted the calls: the server-side series see the LLM traffic
    assert doc["server"]["stats"]["requests_per_s"]["total"] >= entries["chat: stream"]["requests"]
    assert doc["server"]["stats"]["ready_instances"]["max"] >= 1
    assert doc["server"]["stats"]["responses_429_per_s"]["total"] == 0 and doc["server"]["stats"]["in_flight"]["settled"] == 0
    assert (results / "server.png").read_bytes().startswith(PNG)  # the server-side plot beside Locust's
    assert "Server-side series" in (results / "summary.md").read_text() and "## Tokens" in (results / "summary.md").read_text()


def test_llm_scenario_without_a_function_is_a_run_error(tmp_path: Path):
    done = fngate_loadtest("llm", "--target", "http://127.0.0.1:9", "--results", str(tmp_path / "x"))
    assert done.returncode == 2 and "--llm-function-id" in done.stderr


# -- the scrape itself ------------------------------------------------------------------------


class _Metrics(BaseHTTPRequestHandler):
    texts: ClassVar[list[str]] = []  # what the next scrapes read, set by each test

    def do_GET(self) -> None:
        if self.path.startswith("/api") and self.headers.get("Authorization") != "Bearer k":
            self.send_response(401)
            self.end_headers()
            return
        # each gateway scrape reads the next text; the API's scrape reads the current one
        pop = not self.path.startswith("/api") and len(self.texts) > 1
        body = (self.texts.pop(0) if pop else self.texts[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def gateway_text(queue: int, in_flight: int, ok: int, limited: int) -> str:
    return (
        "# HELP fngate_queue_depth x\n# TYPE fngate_queue_depth gauge\n"
        f'fngate_queue_depth{{version_id="v1"}} {queue}\nfngate_queue_depth{{version_id="v2"}} 1\n'
        f"fngate_in_flight_requests {in_flight}\n"
        f'fngate_requests_total{{function_id="f1",status="200"}} {ok}\n'
        f'fngate_requests_total{{function_id="f1",status="429"}} {limited}\n'
        'nvcf_function_instances_current{function_id="f1",function_version_id="v1",name="echo"} 2\n'
        'nvcf_function_instances_current{function_id="f2",function_version_id="v9",name="other"} 5\n'
    )


def test_the_scraper_reads_gauges_rates_and_the_settled_in_flight_count():
    _Metrics.texts = [gateway_text(3, 4, 100, 0), gateway_text(5, 6, 150, 10), gateway_text(0, 0, 200, 10)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        sources = sm.Sources((f"{base}/metrics",), f"{base}/api/metrics", "k", ("f1",))
        readings = []
        for _ in range(3):
            reading, errors = sm.read(sources)
            assert errors == 0
            readings.append(reading)
        assert [r.queue_depth for r in readings] == [4, 6, 1]  # summed over versions
        assert [r.ready_instances for r in readings] == [2, 2, 2]  # the run's function only
        doc = sm.series_report(readings, 1.0, settled=0.0)
        assert doc["stats"]["requests_per_s"]["total"] == 110 and doc["stats"]["responses_429_per_s"]["total"] == 10
        assert doc["stats"]["in_flight"] == {"max": 6, "min": 0, "mean": 10 / 3, "last": 0, "rises": 1, "falls": 1, "settled": 0.0}
        # a source that cannot be read counts as an error and leaves its series out
        reading, errors = sm.read(sm.Sources((), f"{base}/api/metrics", "wrong"))
        assert errors == 1 and reading.ready_instances is None
    finally:
        server.shutdown()


def test_server_rules_judge_a_series_and_fail_one_the_run_lacks():
    doc = {"stats": {"ready_instances": {"max": 2, "min": 1, "mean": 1.5, "last": 1, "rises": 1, "falls": 0}}}
    rules = [{"series": "ready_instances", "rises": ">= 1", "falls": ">= 1"}, {"series": "queue_depth", "max": "<= 10"}]
    got = {(v.entry, v.metric): (v.value, v.passed) for v in evaluate_series(doc, rules)}
    assert got == {
        ("server ready_instances", "rises"): (1.0, True),
        ("server ready_instances", "falls"): (0.0, False),
        ("server queue_depth", "max"): (None, False),
    }
