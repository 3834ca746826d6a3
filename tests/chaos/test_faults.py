"""Fault injection (issue 17): faults as they happen to a running deployment, each
checked for what users rely on: a cut stream or request ends in a way the client can
detect, its slot is freed, a replacement takes over, and nothing acknowledged is lost.

Every case runs short in `make test`; `make chaos` (marker `chaos`) runs the long
variants (more rounds, longer outages).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import alive, instance_pid, write_config
from tests.support.net import free_port
from tests.support.redis import find_redis_server, redis_answers
from tests.support.serve_api import ServeApi

SHORT_AND_LONG = [pytest.param(1, id="short"), pytest.param(3, id="long", marks=pytest.mark.chaos)]
BACKEND = {"name": "local", "type": "local", "probeInterval": 0.2, "unhealthyAfter": 2, "restartBackoff": 0.3}


@pytest.fixture
def serve(fngate_serve, tmp_path):
    config = write_config(tmp_path / "fngate.yaml", backends=[BACKEND])

    def start(*extra: str, **kw):
        return fngate_serve("--config", str(config), *extra, **kw)

    return start


def _in_flight(sp) -> int:
    text = httpx.get(f"http://127.0.0.1:{sp.ready['admin_port']}/metrics", timeout=10).text
    return int(float(re.search(r"^fngate_in_flight_requests (\S+)$", text, re.M).group(1)))


def _deployed(api: ServeApi, name: str, image: str = "fngate/echo", concurrency: int = 4) -> tuple[str, str]:
    fid, vid = api.create(name, image=image)
    api.deploy(fid, vid, min_i=1, max_i=1, concurrency=concurrency)
    api.wait_status(fid, vid, "ACTIVE")
    return fid, vid


def _kill_instance(sp, vid: str) -> int:
    [inst] = sp_instances(sp, vid)
    pid = instance_pid(sp.data_dir, vid, inst["instanceId"])
    os.kill(pid, signal.SIGKILL)
    return pid


def sp_instances(sp, vid: str) -> list[dict]:
    api = ServeApi(sp)
    fid = next(f["id"] for f in api.call("GET", "/v2/nvcf/functions")["functions"] if f["versionId"] == vid)
    return api.ready_instances(fid, vid)


@pytest.mark.parametrize("rounds", SHORT_AND_LONG)
def test_instance_killed_mid_sse_stream(serve, rounds):
    """kill -9 of the instance while it streams: the client sees the stream cut (no
    [DONE], a protocol error at the end), the slot is freed, a replacement starts and
    the next stream is whole."""
    sp = serve()
    api = ServeApi(sp)
    fid, vid = _deployed(api, "chaos-sse", image="fngate/sse")
    body = {"model": "m", "stream": True, "tokens": 400, "interval": 0.01, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(rounds):
        events, cut = [], None
        headers = {**api.headers, "function-id": fid}
        try:
            with httpx.stream("POST", api.gateway + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        if len(events) == 20:
                            _kill_instance(sp, vid)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            cut = exc
        assert cut is not None and "[DONE]" not in events, f"the cut stream looked whole ({len(events)} events)"
        assert 20 <= len(events) < 400
        api.wait(lambda: _in_flight(sp) == 0, "the cut stream's slot freed")
        api.wait_status(fid, vid, "ACTIVE", timeout=30)
        api.wait(lambda: len(api.ready_instances(fid, vid)) == 1, "a replacement instance")
        with httpx.stream("POST", api.gateway + "/v1/chat/completions", json={**body, "tokens": 20}, headers=headers, timeout=30) as r:
            assert r.status_code == 200 and any(line == "data: [DONE]" for line in r.iter_lines())


@pytest.mark.parametrize("rounds", SHORT_AND_LONG)
def test_instance_killed_mid_request_body(serve, rounds):
    """kill -9 of the instance while the client streams its body: the client gets a 502
    problem (or a cut connection), never a hang or a 200; the slot is freed."""
    sp = serve()
    api = ServeApi(sp)
    fid, vid = _deployed(api, "chaos-body")
    for _ in range(rounds):
        killed = threading.Event()

        def body(killed: threading.Event = killed):
            for i in range(40):
                if i == 5:
                    _kill_instance(sp, vid)
                    killed.set()
                yield b"x" * 16384
                time.sleep(0.02)

        try:
            r = httpx.post(api.gateway + "/echo", headers={**api.headers, "function-id": fid}, content=body(), timeout=30)
            assert r.status_code == 502, r.text
            assert r.headers["content-type"] == "application/problem+json" and r.headers["nvcf-status"] == "errored"
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            pass  # the gateway may close the connection on the unread rest of the body
        assert killed.is_set()
        api.wait(lambda: _in_flight(sp) == 0, "the request's slot freed")
        api.wait_status(fid, vid, "ACTIVE", timeout=30)
        api.wait(lambda: api.invoke(fid, content=b"again").status_code == 200, "the replacement serving")


@pytest.mark.parametrize("store", ["sqlite", "redis"])
@pytest.mark.parametrize("writers", [pytest.param(60, id="short"), pytest.param(300, id="long", marks=pytest.mark.chaos)])
def test_serve_killed_during_writes_keeps_every_acknowledged_write(serve, tmp_path, store, writers, request):
    """kill -9 of `fngate serve` during concurrent creates: after a restart, every
    create that was answered 200 is there."""
    extra = ("--store", request.getfixturevalue("redis_url")) if store == "redis" else ()
    data_dir = tmp_path / "kept"
    sp = serve(*extra, data_dir=data_dir)
    api = ServeApi(sp)
    acknowledged: list[str] = []

    async def create(client: httpx.AsyncClient, i: int) -> None:
        body = {"name": f"chaos-{i}", "inferenceUrl": "/echo", "containerImage": "fngate/echo", "inferencePort": 8000}
        try:
            r = await client.post(sp.api_url + "/v2/nvcf/functions", json=body, headers=api.headers, timeout=30)
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            acknowledged.append(r.json()["function"]["id"])

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            tasks = [asyncio.ensure_future(create(client, i)) for i in range(writers)]
            while len(acknowledged) < writers // 3:
                await asyncio.sleep(0.005)
            sp.proc.kill()
            await asyncio.gather(*tasks)

    asyncio.run(run())
    sp.proc.wait()
    assert acknowledged
    again = serve(*extra, data_dir=data_dir)
    listed = {f["id"] for f in ServeApi(again).call("GET", "/v2/nvcf/functions")["functions"]}
    missing = set(acknowledged) - listed
    assert not missing, f"{len(missing)} acknowledged creates lost"


class OwnRedis:
    """A redis-server of the test's own, persisting to its directory, so it can go away
    and come back with its data."""

    def __init__(self, workdir: Path) -> None:
        self.binary = find_redis_server()
        if self.binary is None:
            pytest.skip("redis-server is not installed")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes",
            "--save",
            "",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_answers(self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # appendonly: what it acknowledged is on disk
        self.proc.wait(10)


@pytest.mark.parametrize("outage", [pytest.param(2.0, id="short"), pytest.param(12.0, id="long", marks=pytest.mark.chaos)])
def test_redis_outage_during_traffic(serve, tmp_path, outage):
    """Redis goes away under traffic and comes back: invocations keep flowing from the
    last snapshot with no failure; the management API answers 503 problem+json (never
    500) meanwhile, and works again after."""
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        sp = serve("--store", redis.url)
        api = ServeApi(sp)
        fid, _ = _deployed(api, "chaos-redis")
        statuses: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client() as client:
                while not stop.is_set():
                    statuses.append(client.post(api.gateway + "/echo", headers={**api.headers, "function-id": fid}, timeout=30).status_code)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            time.sleep(0.5)
            redis.stop()
            ends = time.monotonic() + outage
            answers = []
            while time.monotonic() < ends:
                r = httpx.get(sp.api_url + "/v2/nvcf/functions", headers=api.headers, timeout=30)
                answers.append((r.status_code, r.headers.get("content-type")))
                time.sleep(0.2)
            redis.start()
            api.wait(
                lambda: httpx.get(sp.api_url + "/v2/nvcf/functions", headers=api.headers, timeout=30).status_code == 200, "the API back"
            )
            time.sleep(0.5)
        finally:
            stop.set()
            worker.join()
        assert answers and all(a == (503, "application/problem+json") for a in answers), answers
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        assert api.invoke(fid).status_code == 200
    finally:
        if redis.proc is not None and redis.proc.poll() is None:
            redis.stop()


def test_replica_killed_mid_request(fngate_serve, tmp_path, redis_url):
    """Two replicas on one Redis: killing the one a request is on cuts that request
    (the client sees it), and the other replica serves every request meanwhile."""
    import base64

    config = write_config(tmp_path / "fngate.yaml", backends=[BACKEND], leader={"ttl": 2.0, "renewInterval": 0.5})
    env = {"FNGATE_ADMIN_KEY": "nvapi-chaos-admin", "FNGATE_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
    a, b = (fngate_serve("--config", str(config), "--store", redis_url, env=env, data_dir=tmp_path / n) for n in ("a", "b"))
    leader, follower = (a, b) if "leads the control loops" in a.output() else (b, a)
    api = ServeApi(leader)
    fid, _ = _deployed(api, "chaos-replica")
    api_follower = ServeApi(follower)
    api_follower.wait(lambda: api_follower.invoke(fid).status_code == 200, "the follower routing the function")

    outcome: list[object] = []

    def slow_call() -> None:
        try:
            outcome.append(api_follower.invoke(fid, path="/echo?delay=3", timeout=30).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)
    follower.proc.kill()
    statuses = [api.invoke(fid).status_code for _ in range(20)]
    caller.join()
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError), outcome
    assert set(statuses) == {200}, statuses
    api.wait(lambda: _in_flight(leader) == 0, "nothing in flight on the survivor")


def test_hung_instance_gets_504s_and_is_replaced(fngate_serve, tmp_path):
    """An instance that stops answering (SIGSTOP): a call waits out its poll window and
    gets 504; the backend's health checks find it hung (here after ~4 s, longer than the
    poll window) and replace it; calls work again."""
    slow_checks = {**BACKEND, "probeInterval": 0.5, "unhealthyAfter": 8}
    sp = fngate_serve("--config", str(write_config(tmp_path / "fngate.yaml", backends=[slow_checks])))
    api = ServeApi(sp)
    fid, vid = _deployed(api, "chaos-hung")
    [inst] = api.ready_instances(fid, vid)
    pid = instance_pid(sp.data_dir, vid, inst["instanceId"])
    os.kill(pid, signal.SIGSTOP)
    try:
        r = api.invoke(fid, headers={"NVCF-POLL-SECONDS": "2"}, timeout=30)
        # NVCF's answer to a poll window that passed without response headers: an empty 504
        assert r.status_code == 504 and r.content == b"" and r.headers["nvcf-status"] == "errored", (r.status_code, r.text)
        api.wait(
            lambda: api.invoke(fid, headers={"NVCF-POLL-SECONDS": "2"}, timeout=30).status_code == 200, "a replacement serving", timeout=60
        )
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert _in_flight(sp) == 0
