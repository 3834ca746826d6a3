"""A drain across a change of leader on a shared cluster, in one process: two reconcilers
(the old leader's and the new one's, each with its own KubernetesBackend, as two replicas
have) on one Redis store and the fake cluster. The short version of the two-replica
end-to-end test in test_e2e_serve.py."""

from __future__ import annotations

import asyncio
import time

from fngate.backends.inventory import Inventory
from fngate.backends.kubernetes import KubernetesBackend
from fngate.control import records as R
from fngate.control.loadboard import LoadBoard
from fngate.control.reconciler import Reconciler
from fngate.control.store.redis import RedisStore
from fngate.proxy.routing.snapshot import LoadReport, VersionLoad
from tests.support.helpers import deploy, gpu_spec, wait_status
from tests.support.waiting import wait_for


def _backend(cluster) -> KubernetesBackend:
    return KubernetesBackend(
        "k8s",
        namespace=cluster.namespace,
        kubeconfig=str(cluster.kubeconfig),
        startup_timeout=20,
        inventory=Inventory({"L40S": 4, "H100": 2, "A100": 1}),
    )


def _report(board: LoadBoard, vid: str, busy: dict[str, int]) -> None:
    """A gateway's load report: `busy` requests in flight per pod."""
    board.update(LoadReport("gw", time.time() + 3600, {vid: VersionLoad(in_flight=sum(busy.values()), endpoint_in_flight=busy)}))


def _live_pods(cluster, vid: str) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods() if p["metadata"]["labels"].get("fngate.io/version-id") == vid}


async def _ready(store, vid: str, n: int) -> bool:
    return sum(r.value.get("instanceStatus") == "ACTIVE" for r in await store.list(R.INSTANCES, vid + "/")) == n


async def _draining(store, vid: str) -> list[str]:
    return [r.value["instanceId"] for r in await store.list(R.INSTANCES, vid + "/") if r.value.get("draining")]


async def test_the_new_leader_finishes_the_old_ones_drain_without_touching_a_busy_pod(cluster, redis_url):
    store = await RedisStore.open(redis_url)
    board = LoadBoard()
    old_backend, new_backend = _backend(cluster), _backend(cluster)
    made: list[Reconciler] = []

    def reconciler(backend: KubernetesBackend) -> Reconciler:
        made.append(Reconciler(store, {"k8s": backend}, board, resync_interval=0.3, drain_settle=0.05, inherit_grace=1.0))
        return made[-1]

    try:
        old = reconciler(old_backend)
        await old.start()
        spec = gpu_spec(1, 2, backend="k8s", maxRequestConcurrency=4)
        fid, vid = await deploy(store, specs=[spec])
        scale = R.scale_key(vid, spec["gpuSpecificationId"])
        await store.put(R.SCALE, scale, {"replicas": 2})
        await wait_status(store, fid, vid, "ACTIVE", timeout=30)
        await wait_for(lambda: _ready(store, vid, 2), 30, what="two pods ready")
        a, b = _live_pods(cluster, vid)
        _report(board, vid, {a: 1, b: 1})  # both busy: the scale-down has to wait
        await store.put(R.SCALE, scale, {"replicas": 1})
        [victim] = await wait_for(lambda: _draining(store, vid), 10, what="the old leader draining a pod")
        keeper = b if victim == a else a

        await old.aclose()  # the leader dies mid-drain: its backend goes, the pods run on
        await old_backend.aclose()
        new = reconciler(new_backend)
        await new.start()
        await asyncio.sleep(2.5)  # past the grace and several passes
        assert _live_pods(cluster, vid) == {a, b}, "a pod was deleted while its request ran"
        assert [d["spec"]["replicas"] for d in cluster.deployments()] == [2]
        assert await _draining(store, vid) == [victim], "the drained pod must stay out of routing, and only it"

        _report(board, vid, {victim: 0, keeper: 1})  # the victim's request ended
        await wait_for(lambda: _live_pods(cluster, vid) == {keeper}, 15, what="the drained pod deleted")
        await wait_for(lambda: [d["spec"]["replicas"] for d in cluster.deployments()] == [1], 5, what="the Deployment at 1")
        await wait_status(store, fid, vid, "ACTIVE")
    finally:
        for rec in made:
            await rec.aclose()
        await old_backend.aclose()
        await new_backend.aclose()
        await store.aclose()
