"""The console's JSON against a real `fngate serve`: what the charts get after real traffic,
for the in-process gateway and for `--workers 2` (whose parent joins the workers'
/metrics), and the invocation relay streaming an SSE answer event by event."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from fngate.control.promtext import Exposition
from tests.conftest import ServeProcess, start_serve
from tests.support.keys import key_body, key_headers
from tests.support.serve_api import ServeApi


def _metrics(api: ServeApi) -> dict:
    return api.call("GET", "/v1/console/metrics")


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One in-process gateway for the tests of this module that do not need their own."""
    sp = start_serve(tmp_path_factory.mktemp("console-serve") / "fngate")
    yield sp
    sp.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_charts_follow_real_traffic(request: pytest.FixtureRequest, fngate_serve, workers: int) -> None:
    sp = request.getfixturevalue("one_worker") if workers == 1 else fngate_serve("--workers", str(workers))
    api = ServeApi(sp)
    fid, vid = api.create("console-echo")
    api.deploy(fid, vid, min_i=1, max_i=1, concurrency=4)
    api.wait_status(fid, vid, "ACTIVE")
    before = _metrics(api)  # a reading before the traffic
    assert before["gateway"]["up"], before["gateway"]
    ok = sum(api.invoke(fid).status_code == 200 for _ in range(12))
    failed = sum(api.invoke(fid, "/echo?status=500").status_code == 500 for _ in range(3))
    assert (ok, failed) == (12, 3)
    time.sleep(1.1)  # readings are at least a second apart
    point = _metrics(api)["functions"][fid]["points"][-1]  # the interval that holds the traffic
    assert point["rps"] * point["dt"] == pytest.approx(15, abs=0.1)
    assert set(point["errors"]) == {"500"} and point["errors"]["500"] * point["dt"] == pytest.approx(3, abs=0.1)
    assert point["readyInstances"] == 1 and point["queueDepth"] == 0
    assert (point["inFlight"], point["inFlightScope"]) == (0, "function")  # from the gateways' load reports
    assert point["p50"] is not None and 0 < point["p50"] <= point["p99"] < 5


def test_relay_streams_sse_events_as_they_come(one_worker: ServeProcess) -> None:
    sp = one_worker
    api = ServeApi(sp)
    fid, vid = api.create("console-sse", image="fngate/sse", inferenceUrl="/v1/chat/completions")
    api.deploy(fid, vid)
    api.wait_status(fid, vid, "ACTIVE")
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "tokens": 5, "interval": 0.3}
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{sp.api_url}/v1/console/invoke/{fid}",
        params={"path": "/v1/chat/completions", "version": vid},
        json=body,
        headers={**api.headers, "Accept": "text/event-stream"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["nvcf-status"] == "fulfilled" and len(resp.headers["nvcf-reqid"]) == 36
        text = ""
        for chunk in resp.iter_text():
            arrivals.append(time.monotonic() - started)
            text += chunk
    assert text.count("data: ") == 6 and text.rstrip().endswith("data: [DONE]")
    assert arrivals[0] < arrivals[-1] - 0.8, arrivals  # the first token arrived well before the last: not buffered

    # a page that goes away mid-stream ends the gateway's stream too (not after the 10 s it would last)
    def gateway_metric(name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{sp.ready['admin_port']}/metrics").text
        return Exposition.parse(text).total(name)

    disconnects = gateway_metric("fngate_client_disconnects_total")
    long = {**body, "tokens": 200, "interval": 0.05}
    with httpx.stream(
        "POST", f"{sp.api_url}/v1/console/invoke/{fid}", params={"path": "/v1/chat/completions"}, json=long, headers=api.headers, timeout=30
    ) as resp:
        chunks = resp.iter_raw()  # kept: a dropped iterator closes the response
        assert next(chunks).startswith(b"data: ")
        assert gateway_metric("fngate_sse_streams_open") == 1
        assert gateway_metric("fngate_client_disconnects_total") == disconnects
    left = time.monotonic()
    api.wait(lambda: gateway_metric("fngate_sse_streams_open") == 0, "the gateway's stream closed", timeout=5)
    assert time.monotonic() - left < 5 and gateway_metric("fngate_client_disconnects_total") == disconnects + 1

    # the gateway's own refusal comes back as it is: a key without invoke_function gets 403
    listing = httpx.post(f"{sp.api_url}/v1/keys", headers={**api.headers, **key_headers("relay@test")}, json=key_body(["list_functions"]))
    assert listing.status_code == 200, listing.text
    refused = httpx.post(
        f"{sp.api_url}/v1/console/invoke/{fid}",
        params={"path": "/v1/chat/completions"},
        headers={"Authorization": f"Bearer {listing.json()['value']}"},
        content=b"{}",
    )
    assert refused.status_code == 403 and refused.headers["nvcf-status"] == "errored"
