"""Issue 17's scale-down scenario end to end: SSE streams are open on both instances of
a function when the autoscaler scales it down. The drained instance leaves routing at
once and is stopped only after its stream has sent every event; with the drain deadline
at its default, nothing is cut."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest

from fngate.proxy.routing.snapshot import RoutingTable
from tests.e2e.helpers import alive, instance_pid, write_config
from tests.support.serve_api import ServeApi


@pytest.fixture
def api(fngate_serve, tmp_path):
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local", "probeInterval": 0.2, "stopGrace": 2}],
        autoscaler={"interval": 0.3, "window": 2, "downStabilization": 1, "idleTimeout": 3600},
        reconciler={"resyncInterval": 1},  # drainTimeout: the default
    )
    return ServeApi(fngate_serve("--config", str(config)))


class Stream(threading.Thread):
    """One SSE stream read to its end in a thread: the events' sequence numbers and when it ended."""

    def __init__(self, api: ServeApi, fid: str, tokens: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.api, self.fid, self.tokens, self.interval = api, fid, tokens, interval
        self.seqs: list[int] = []
        self.done_marker = False
        self.error: Exception | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        headers = {**self.api.headers, "function-id": self.fid}
        body = {"stream": True, "tokens": self.tokens, "interval": self.interval}
        try:
            with httpx.stream("POST", self.api.gateway + "/v1/chat/completions", headers=headers, json=body, timeout=60) as r:
                assert r.status_code == 200, r.status_code
                for line in r.iter_lines():
                    if line == "data: [DONE]":
                        self.done_marker = True
                    elif line.startswith("data: "):
                        self.seqs.append(orjson.loads(line[6:])["seq"])
        except Exception as exc:
            self.error = exc
        self.ended_at = time.monotonic()


def _sse_open(api: ServeApi) -> float:
    text = httpx.get(f"http://127.0.0.1:{api.sp.ready['admin_port']}/metrics").text
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("fngate_sse_streams_open ")))


def _draining(api: ServeApi, vid: str) -> list[str]:
    r = httpx.get(api.sp.api_url + "/internal/v1/routing", headers=api.headers)
    table = RoutingTable.from_json(r.content)
    return [e.id for routes in table.functions.values() for v, route in routes.items() if v == vid for e in route.endpoints if e.draining]


def _watch_deaths(pids: dict[str, int], stop: threading.Event) -> dict[str, float]:
    died: dict[str, float] = {}

    def run() -> None:
        while not stop.is_set():
            for iid, pid in pids.items():
                if iid not in died and not alive(pid):
                    died[iid] = time.monotonic()
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()
    return died


@pytest.mark.parametrize(
    "tokens, interval",
    [
        pytest.param(200, 0.02, id="200x0.02s"),
        pytest.param(3600, 0.05, id="3600x0.05s", marks=[pytest.mark.slow, pytest.mark.timeout(420)]),
    ],
)
def test_scale_down_with_streams_open_completes_every_event(api, tokens, interval):
    fid, vid = api.create("drain-sse", image="fngate/sse", inferenceUrl="/v1/chat/completions")
    api.deploy(fid, vid, min_i=2, max_i=2, concurrency=4)
    api.wait_status(fid, vid, "ACTIVE")
    api.wait(lambda: len(api.ready_instances(fid, vid)) == 2, "two ready instances")
    pids = {i["instanceId"]: instance_pid(api.sp.data_dir, vid, i["instanceId"]) for i in api.ready_instances(fid, vid)}
    stop_watching = threading.Event()
    died = _watch_deaths(pids, stop_watching)

    streams = []
    for n in (1, 2):  # the second lands on the idle instance: one stream on each
        streams.append(Stream(api, fid, tokens, interval))
        streams[-1].start()
        api.wait(lambda n=n: _sse_open(api) == n, f"{n} stream(s) open")

    # 2 streams on 2 x 4 slots is 25 % utilisation: the autoscaler scales down to 1
    api.call(
        "PUT",
        f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        {"deploymentSpecifications": [{"minInstances": 1, "maxInstances": 2}]},
    )
    [victim] = api.wait(lambda: _draining(api, vid), "an instance drained (out of routing)", 15)
    assert all(s.is_alive() for s in streams), "the scale-down came after the streams ended: nothing was tested"
    assert api.invoke(fid, "/v1/chat/completions", json={"tokens": 2, "interval": 0}).status_code == 200

    for s in streams:
        s.join(tokens * interval + 60)
    stop_watching_at = time.monotonic() + 15
    while victim not in died and time.monotonic() < stop_watching_at:
        time.sleep(0.05)
    stop_watching.set()
    for s in streams:
        assert s.error is None, f"a stream failed: {s.error!r}"
        assert s.seqs == list(range(tokens)) and s.done_marker, f"a stream was cut after {len(s.seqs)} of {tokens} events"
    assert victim in died, "the drained instance was never stopped"
    assert died[victim] >= min(s.ended_at for s in streams), "the drained instance was stopped before its stream ended"
    assert set(died) == {victim}, "the instance that kept serving was stopped"
    assert len(api.ready_instances(fid, vid)) == 1 and api.status(fid, vid) == "ACTIVE"
