"""Gateway workers in their own processes: routing reaches them (internal long-poll
or Redis) and their load reports reach the autoscaler (internal PUT or Redis keys),
so a request to a function at zero still starts an instance; pexec polls and the
admin port work whichever worker a connection reaches."""

from __future__ import annotations

import asyncio
import os
import re
import signal

import httpx
import pytest

from tests.e2e.helpers import write_config
from tests.support.serve_api import ServeApi


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_scale_from_zero_with_gateway_workers(fngate_serve, tmp_path, store, request):
    args = ["--workers", "2"]
    if store == "redis":
        args += ["--store", request.getfixturevalue("redis_url")]
    config = write_config(
        tmp_path / "fngate.yaml",
        backends=[{"name": "local", "type": "local", "probeInterval": 0.2}],
        autoscaler={"interval": 0.3, "window": 2},
    )
    sp = fngate_serve("--config", str(config), *args)
    api = ServeApi(sp)
    fid, vid = api.create(f"e2e-workers-{store}")
    api.deploy(fid, vid, min_i=0, max_i=1)
    api.wait_status(fid, vid, "ACTIVE")
    r = api.invoke(fid, headers={"NVCF-POLL-SECONDS": "30"}, timeout=40)
    assert r.status_code == 200, r.text
    assert len(api.ready_instances(fid, vid)) == 1

    statuses, per_worker = _until_both_workers_serve(api, sp, fid)
    assert set(statuses) == {200}, statuses
    assert sum(per_worker.values()) == 1 + len(statuses), per_worker  # the scale-from-zero call and these


def _until_both_workers_serve(api: ServeApi, sp, fid: str) -> tuple[list[int], dict[str, int]]:
    """New connections land on either worker (SO_REUSEPORT): keep opening them until each
    worker has served the function, which it can only do with the current routing.
    Returns every status seen and the requests per worker."""
    admin = f"http://127.0.0.1:{sp.ready['admin_port']}/metrics"
    statuses: list[int] = []

    def served_by_both() -> dict[str, int] | None:
        statuses.append(api.invoke(fid).status_code)  # httpx.post: a new connection each time
        per_worker = {w: per.get(fid, 0) for w, per in _requests_by_worker(httpx.get(admin, timeout=10).text).items()}
        return per_worker if len(per_worker) == 2 and all(per_worker.values()) else None

    return statuses, api.wait(served_by_both, "both gateway workers serving the function", timeout=60, interval=0)


def _requests_by_worker(metrics: str) -> dict[str, dict[str, int]]:
    """{worker: {function_id: requests}} from fngate_requests_total samples."""
    out: dict[str, dict[str, int]] = {}
    for line in metrics.splitlines():
        if line.startswith("fngate_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            per = out.setdefault(labels["worker"], {})
            per[labels["function_id"]] = per.get(labels["function_id"], 0) + int(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.slow  # a 6 s pexec polled from both workers; test_scale_from_zero_with_gateway_workers stays
async def test_pexec_polls_and_metrics_span_gateway_workers(fngate_serve, tmp_path):
    """A 202'd pexec request can be polled on whichever worker a connection lands on;
    the admin port's /metrics and /readyz speak for every worker."""
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])
    sp = fngate_serve("--config", str(config), "--workers", "2")
    api = ServeApi(sp)
    admin = f"http://127.0.0.1:{sp.ready['admin_port']}"
    fid, vid = api.create("e2e-workers-pexec")
    api.deploy(fid, vid, min_i=1, max_i=1, concurrency=8)
    api.wait_status(fid, vid, "ACTIVE")
    warmups = 4
    for _ in range(warmups):
        assert api.invoke(fid).status_code == 200

    async with httpx.AsyncClient(timeout=30) as c:
        ready = await c.get(f"{admin}/readyz")
        assert ready.status_code == 200 and len(ready.json()["workers"]) == 2, ready.text
        r = await c.post(
            f"{api.gateway}/v2/nvcf/pexec/functions/{fid}",
            content=b"hello",
            headers={**api.headers, "NVCF-POLL-SECONDS": "1", "Echo-Delay": "6"},
        )
    assert r.status_code == 202, r.text
    rid = r.headers["nvcf-reqid"]

    async def poll() -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as one:  # a new connection: either worker
            return await one.get(f"{api.gateway}/v2/nvcf/pexec/status/{rid}", headers={**api.headers, "NVCF-POLL-SECONDS": "1"})

    polls: list[httpx.Response] = []
    for _ in range(5):
        polls += await asyncio.gather(*(poll() for _ in range(6)))
    assert all(p.status_code in (200, 202) for p in polls), [(p.status_code, p.text) for p in polls]
    assert all(p.headers["nvcf-reqid"] == rid for p in polls)
    assert any(p.status_code == 202 for p in polls)
    done = [p for p in polls if p.status_code == 200]
    assert done, "the result never arrived"
    result = done[-1].json()
    assert result["bodySize"] == 5 and result["path"] == "/echo"
    assert {k.lower(): v for k, v in result["headers"].items()}["nvcf-reqid"] == rid

    async with httpx.AsyncClient(timeout=30) as c:
        text = (await c.get(f"{admin}/metrics")).text
    assert text.count("# TYPE fngate_requests_total counter") == 1
    by_worker = _requests_by_worker(text)
    assert len(by_worker) == 2, text
    assert sum(sum(per.values()) for per in by_worker.values()) == warmups + 1 + len(polls)
    assert sum(per.get(fid, 0) for per in by_worker.values()) == warmups
    # the id names the worker that ran it; that one got the POST, and both got polls
    owner = next(w for w in by_worker if w.endswith(f"-{int(rid[:2], 16)}"))
    other = next(w for w in by_worker if w != owner)
    # pexec requests and polls carry no function label of their own (issue 13, attack 8)
    assert by_worker[owner].get("unknown", 0) >= 2 and by_worker[other].get("unknown", 0) >= 1, by_worker
    assert len(re.findall(r'^fngate_gateway_worker_up\{worker="[^"]+"\} 1$', text, re.M)) == 2


def _worker_pids(parent: int) -> list[int]:
    """The gateway worker processes `fngate serve --workers N` started."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"fngate.proxy.ops.workers" in cmdline:
            pids.append(int(entry))
    return sorted(pids)


def test_a_dead_gateway_worker_is_started_again(fngate_serve, tmp_path):
    """kill -9 of one worker: the other serves every request meanwhile, and the parent
    starts the dead one again, which then serves with the current routing."""
    config = write_config(tmp_path / "fngate.yaml", backends=[{"name": "local", "type": "local", "probeInterval": 0.2}])
    sp = fngate_serve("--config", str(config), "--workers", "2")
    api = ServeApi(sp)
    admin = f"http://127.0.0.1:{sp.ready['admin_port']}/metrics"
    fid, vid = api.create("e2e-workers-restart")
    api.deploy(fid, vid, min_i=1, max_i=1, concurrency=8)
    api.wait_status(fid, vid, "ACTIVE")
    assert api.invoke(fid).status_code == 200
    before = _worker_pids(sp.proc.pid)
    assert len(before) == 2, before

    os.kill(before[0], signal.SIGKILL)
    statuses = [api.invoke(fid).status_code for _ in range(30)]  # a new connection each
    assert set(statuses) == {200}, statuses

    def restarted() -> str | None:
        text = httpx.get(admin, timeout=10).text
        up = re.findall(r'^fngate_gateway_worker_up\{worker="[^"]+"\} 1$', text, re.M)
        counts = [int(n) for n in re.findall(r'^fngate_gateway_worker_restarts_total\{worker="[^"]+"\} (\d+)$', text, re.M)]
        return text if len(up) == 2 and sorted(counts) == [0, 1] else None

    api.wait(restarted, "the dead worker started again", timeout=30)
    after = _worker_pids(sp.proc.pid)
    assert len(after) == 2 and before[1] in after and before[0] not in after, (before, after)

    # the new worker routes with the current snapshot: new connections reach both, all 200
    statuses, _ = _until_both_workers_serve(api, sp, fid)
    assert set(statuses) == {200}, statuses
