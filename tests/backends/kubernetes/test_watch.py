"""The pod watch survives what real API servers do: ending watches, cutting
connections, and compacting history (410 Gone) while pods change unseen."""

from __future__ import annotations

import itertools

import httpx

from fngate.backends.base import InstanceEventKind as K
from tests.support.toys import Tracker, toy_spec
from tests.support.waiting import wait_for


def count(cluster, verb: str) -> int:
    return sum(1 for v, r in cluster.api.requests if (v, r) == (verb, "pods"))


async def ready_pods(backend, cluster, n: int) -> Tracker:
    t = Tracker(backend)
    await backend.apply(toy_spec(), n)
    await t.until(lambda: len(t.ready_of("v1")) == n)
    return t


async def test_clean_end_of_watch_resumes_from_resource_version(cluster, k8s_backend):
    t = await ready_pods(k8s_backend, cluster, 1)
    lists, watches = count(cluster, "list"), count(cluster, "watch")
    assert cluster.api.drop_watches() == 1
    await k8s_backend.apply(toy_spec(), 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    assert count(cluster, "watch") > watches
    assert count(cluster, "list") == lists, "a watch that ended cleanly resumes; no re-list needed"
    await t.close()


async def test_cut_connection_relists_and_keeps_following(cluster, k8s_backend):
    t = await ready_pods(k8s_backend, cluster, 1)
    lists = count(cluster, "list")
    cluster.api.drop_watches(abrupt=True)
    await k8s_backend.apply(toy_spec(), 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    assert count(cluster, "list") > lists
    await t.close()


async def test_410_gone_relists_and_reports_pods_that_vanished_unseen(cluster, k8s_backend):
    t = await ready_pods(k8s_backend, cluster, 2)
    victim = sorted(t.ready_of("v1"), key=lambda e: e.instance_id)[0]
    lists = count(cluster, "list")
    # while no watch is open: the pod vanishes and the history is compacted
    cluster.api.drop_watches()
    cluster.kubelet.vanish_pod(victim.instance_id, cluster.namespace)
    cluster.api.expire_history()
    await t.until(lambda: victim.instance_id not in t.ready)
    lost = [e for e in t.of_kind(K.LOST, "v1") if e.instance_id == victim.instance_id]
    assert lost and lost[0].detail == "pod deleted"
    assert count(cluster, "list") > lists, "410 Gone must lead to a re-list"
    # the Deployment replaces it and the backend sees the replacement through the new watch
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    assert victim.instance_id not in t.ready
    async with httpx.AsyncClient() as client:
        for e in t.ready_of("v1"):
            assert (await client.get(f"http://{e.host}:{e.port}/")).status_code == 200
    await t.close()


async def test_watch_errors_back_off_and_recover(cluster, k8s_backend):
    t = await ready_pods(k8s_backend, cluster, 1)
    since = len(cluster.api.requests)
    cluster.api.inject_error("watch", "pods", 500, "etcdserver: request timed out", times=3)
    cluster.api.drop_watches()
    await wait_for(lambda: cluster.api.errors[0]["left"] == 0, what="the backend retrying the watch")
    await k8s_backend.apply(toy_spec(), 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)

    # the three failed watches and the one that followed them, each after a longer pause:
    # the back-off starts at retry_backoff and doubles (a pause is never shorter than asked)
    def watches() -> list[float]:
        seen = zip(cluster.api.requests[since:], cluster.api.request_times[since:], strict=False)
        return [at for (verb, res), at in seen if (verb, res) == ("watch", "pods")]

    watched = await wait_for(lambda: w if len(w := watches()) >= 4 else None, what="the watch after the failed ones")
    pauses = [b - a for a, b in itertools.pairwise(watched[:4])]
    first = k8s_backend.retry_backoff
    assert all(pause >= first * 2**i - 0.01 for i, pause in enumerate(pauses)), (first, pauses)
    await t.close()


async def test_compaction_by_volume_also_leads_to_a_relist(cluster, k8s_backend):
    t = await ready_pods(k8s_backend, cluster, 1)
    lists = count(cluster, "list")
    cluster.api.history_limit = 4
    cluster.api.drop_watches()
    # enough writes while the watch reconnects that its resourceVersion is compacted away
    for i in range(12):
        cluster.api.put("secrets", cluster.namespace, {"metadata": {"name": f"noise-{i}"}}, event="ADDED")
    await k8s_backend.apply(toy_spec(), 2)
    await t.until(lambda: len(t.ready_of("v1")) == 2)
    assert count(cluster, "list") > lists
    await t.close()
