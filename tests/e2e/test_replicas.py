"""Several `fngate serve` replicas on one Redis: every replica serves the API and
invocations, exactly one runs the control loops, and when it dies another takes over
within the lease's time and keeps the functions running."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from tests.e2e.helpers import alive, instance_pid, serve_replicas
from tests.support.serve_api import ServeApi

LEADS = "this replica leads the control loops"
TTL, RENEW = 2.0, 0.5


@pytest.fixture
def replicas(fngate_serve, tmp_path, redis_url):
    return serve_replicas(fngate_serve, tmp_path, redis_url, leader={"ttl": TTL, "renewInterval": RENEW})


def _leaders(replicas) -> list:
    return [sp for sp in replicas if LEADS in sp.output()]


def test_one_leader_serves_both_replicas_and_another_takes_over(replicas):
    leaders = _leaders(replicas)
    assert len(leaders) == 1, [sp.output() for sp in replicas]
    leader = leaders[0]
    follower = next(sp for sp in replicas if sp is not leader)
    api_leader, api_follower = ServeApi(leader), ServeApi(follower)

    # the follower's API takes the deployment; the leader's reconciler runs it
    fid, vid = api_follower.create("replicas-echo")
    api_follower.deploy(fid, vid, min_i=1, max_i=1, concurrency=4)
    api_follower.wait_status(fid, vid, "ACTIVE")
    for api in (api_follower, api_leader):  # both gateways route it (the follower's through Redis)
        api.wait(lambda api=api: api.invoke(fid).status_code == 200, "the function served by this replica's gateway")

    leader.proc.kill()  # kill -9: no hand-over, the lease has to expire
    leader.proc.wait()
    died = time.monotonic()
    api_follower.wait(lambda: LEADS in follower.output(), "the survivor leading", timeout=TTL + 10)
    took_over = time.monotonic() - died
    assert took_over < TTL + 3 * RENEW + 2, took_over
    assert f"{LEADS} (fencing token 1)" in leader.output() and f"{LEADS} (fencing token 2)" in follower.output()

    # the new leader brings the function back on its own backend, and serves it
    api_follower.wait(lambda: api_follower.invoke(fid, timeout=10).status_code == 200, "the function served again", timeout=60)
    assert api_follower.status(fid, vid) == "ACTIVE"
    assert api_follower.call("GET", "/v2/nvcf/functions")["functions"]


async def test_a_deposed_leader_hands_its_local_instances_over_without_cutting_a_request(replicas):
    """The leader is paused past its lease (SIGSTOP) and another replica takes over. The old
    leader's local instance cannot be adopted: the new leader runs its own, keeps the old
    one draining while a request runs on it, and when that request has ended the old
    leader, awake again and deposed, stops it. Before, it ran on, unrouted, until that
    replica stopped."""
    leader = _leaders(replicas)[0]
    follower = next(sp for sp in replicas if sp is not leader)
    api_leader, api_follower = ServeApi(leader), ServeApi(follower)
    fid, vid = api_follower.create("replicas-handover")
    api_follower.deploy(fid, vid, min_i=1, max_i=1, concurrency=4)
    api_follower.wait_status(fid, vid, "ACTIVE")
    [inst] = api_follower.ready_instances(fid, vid)
    old_pid = instance_pid(leader.data_dir, vid, inst["instanceId"])
    api_follower.wait(lambda: api_follower.invoke(fid).status_code == 200, "the follower's gateway serving it")

    async with httpx.AsyncClient() as client:
        slow = asyncio.ensure_future(api_follower.ainvoke(client, fid, "/echo?delay=8"))
        await asyncio.sleep(1.0)
        os.kill(leader.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.to_thread(api_follower.wait, lambda: LEADS in follower.output(), "the follower leading", TTL + 10)
            await asyncio.to_thread(
                api_follower.wait, lambda: len(api_follower.ready_instances(fid, vid)) >= 2, "the new leader's own instance", 60
            )
        finally:
            os.kill(leader.proc.pid, signal.SIGCONT)
        await asyncio.to_thread(api_leader.wait, lambda: "no longer leads" in leader.output(), "the old leader deposed", 20)
        assert alive(old_pid), "the old instance must run while its request does"
        r = await slow
    assert r.status_code == 200, "the request on the handed-over instance must finish"
    await asyncio.to_thread(api_leader.wait, lambda: not alive(old_pid), "the handed-over instance stopped", 20)
    [new] = api_follower.ready_instances(fid, vid)
    assert new["instanceId"] != inst["instanceId"]
    for api in (api_leader, api_follower):
        assert api.invoke(fid, timeout=20).status_code == 200


def test_a_leader_stopped_with_sigterm_hands_its_instances_over_without_cutting_a_stream(replicas):
    """An SSE stream runs through the follower's gateway on the leader's local instance (a
    child process of the leader) when the leader gets SIGTERM. The leader gives the lease up
    at once; the new leader takes the instance out of routing, starts its own, and lets go
    of the old one once the stream ended; only then does the old leader stop it and exit.
    Before, the old leader stopped its instances as soon as its own gateway had drained, and
    the stream was cut."""
    from tests.e2e.test_drain_streams import Stream

    leader = _leaders(replicas)[0]
    follower = next(sp for sp in replicas if sp is not leader)
    api_follower = ServeApi(follower)
    fid, vid = api_follower.create("replicas-stop", image="fngate/sse", inferenceUrl="/v1/chat/completions")
    api_follower.deploy(fid, vid, min_i=1, max_i=1, concurrency=4)
    api_follower.wait_status(fid, vid, "ACTIVE")
    [inst] = api_follower.ready_instances(fid, vid)
    old_pid = instance_pid(leader.data_dir, vid, inst["instanceId"])
    sse = {"json": {"tokens": 2, "interval": 0}}
    api_follower.wait(lambda: api_follower.invoke(fid, "/v1/chat/completions", **sse).status_code == 200, "the follower serving it")

    tokens, interval = 60, 0.1  # a 6 s stream
    stream = Stream(api_follower, fid, tokens, interval)
    stream.start()
    api_follower.wait(lambda: len(stream.seqs) >= 5, "the stream under way")
    leader.proc.send_signal(signal.SIGTERM)
    api_follower.wait(lambda: LEADS in follower.output(), "the follower leading", TTL + 5)
    assert stream.is_alive(), "the stream ended before the hand-over: nothing was tested"
    assert alive(old_pid), "the old leader stopped its instance while a stream ran on it"
    stream.join(30)
    assert stream.error is None, f"the stream failed: {stream.error!r}"
    assert stream.seqs == list(range(tokens)) and stream.done_marker, f"the stream was cut after {len(stream.seqs)} of {tokens} events"

    assert leader.proc.wait(30) == 0, leader.output()
    assert not alive(old_pid), "the old leader left its instance running"
    assert "leads now; local instances stop once it has drained them" in leader.output()
    [new] = api_follower.ready_instances(fid, vid)
    assert new["instanceId"] != inst["instanceId"]
    assert api_follower.invoke(fid, "/v1/chat/completions", **sse).status_code == 200
