"""`fngate serve --workers 2 --access-log FILE --otlp-endpoint URL`: the options reach the
worker processes, a real invocation of the echo sample leaves its JSON line and its spans
(a real OTLP/HTTP receiver), and the instance gets the trace context."""

from __future__ import annotations

import json

import pytest

from tests.support.otlp import ThreadedOtlpReceiver
from tests.support.serve_api import ServeApi

CLIENT_TRACE = "5b8aa5a2d2c872e8321cf37308d69df2"


@pytest.fixture
def receiver():
    r = ThreadedOtlpReceiver()
    yield r
    r.stop()


def test_serve_writes_access_log_lines_and_exports_spans_from_its_workers(fngate_serve, tmp_path, receiver):
    log = tmp_path / "access.log"
    sp = fngate_serve("--workers", "2", "--access-log", str(log), "--otlp-endpoint", receiver.url, "--trace-sample-ratio", "1")
    api = ServeApi(sp)
    fid, vid = api.create("e2e-observed")
    api.deploy(fid, vid, min_i=1, max_i=1)
    api.wait_status(fid, vid, "ACTIVE")
    r = api.invoke(fid, headers={"traceparent": f"00-{CLIENT_TRACE}-051581bf3cb55c13-01"}, content=b"hello")
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["traceparent"].split("-")[1] == CLIENT_TRACE
    reqid = r.headers["nvcf-reqid"]

    def logged() -> dict | None:
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return next((line for line in lines if line["request_id"] == reqid), None)

    line = api.wait(logged, "the request's access log line", timeout=20)
    assert (line["function_id"], line["version_id"], line["status"], line["bytes_in"]) == (fid, vid, 200, 5)
    spans = receiver.wait_for(lambda spans: any(s.name == "fngate.invoke" and s.trace_id == CLIENT_TRACE for s in spans))
    root = next(s for s in spans if s.name == "fngate.invoke" and s.trace_id == CLIENT_TRACE)
    assert root.attributes["fngate.function_id"] == fid and root.attributes["fngate.request_id"] == reqid
