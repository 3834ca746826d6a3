"""What goes wrong on a cluster, as the reconciler sees it: crashed, evicted and
never-ready pods, API refusals and quota, and functions this backend cannot run."""

from __future__ import annotations

import asyncio

import pytest

from fngate.backends.base import BackendError
from fngate.backends.base import InstanceEventKind as K
from fngate.backends.kubernetes import KubernetesBackend
from tests.support.toys import Tracker, toy_spec


def free_of(backend, spec) -> int:
    return next(c["free"] for c in backend.capacity() if c["name"] == spec.instance_type)


async def test_killed_container_is_lost_then_ready_again(cluster, k8s_backend):
    t = Tracker(k8s_backend)
    await k8s_backend.apply(toy_spec(), 1)
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    pod = t.ready_of("v1")[0].instance_id
    cluster.kubelet.kill_pod(pod, cluster.namespace)
    await t.until(lambda: t.of_kind(K.LOST, "v1"))
    assert t.of_kind(K.LOST, "v1")[0].instance_id == pod
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    assert t.ready_of("v1")[0].instance_id == pod, "the container restarts inside the same pod"
    await t.close()


async def test_evicted_pod_is_lost_and_replaced(cluster, k8s_backend):
    t = Tracker(k8s_backend)
    await k8s_backend.apply(toy_spec(), 1)
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    pod = t.ready_of("v1")[0].instance_id
    cluster.kubelet.evict_pod(pod, cluster.namespace)
    await t.until(lambda: t.of_kind(K.LOST, "v1"))
    assert "Evicted" in t.of_kind(K.LOST, "v1")[0].detail
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    assert t.ready_of("v1")[0].instance_id != pod
    await t.close()


@pytest.mark.parametrize("image, reason", [("test/nosuchimage", "ImagePullBackOff"), ("test/exits", "CrashLoopBackOff")])
async def test_pod_that_never_gets_ready_fails_after_the_startup_timeout(cluster, image, reason):
    backend = KubernetesBackend("k8s", namespace=cluster.namespace, kubeconfig=str(cluster.kubeconfig), startup_timeout=1.5)
    t = Tracker(backend)
    try:
        await backend.apply(toy_spec(image=image), 1)
        await t.until(lambda: t.of_kind(K.FAILED, "v1"), timeout=10)
        detail = t.of_kind(K.FAILED, "v1")[0].detail
        assert "did not become ready within 1.5s" in detail and reason in detail
        assert not t.of_kind(K.READY)
    finally:
        await t.close()
        await backend.aclose()


async def test_api_refusal_is_a_backend_error_with_the_api_message(cluster, k8s_backend):
    spec = toy_spec()
    start = free_of(k8s_backend, spec)
    cluster.api.inject_error(
        "create", "deployments", 403, 'deployments.apps is forbidden: User "system:serviceaccount:x:fngate" cannot create resource'
    )
    with pytest.raises(BackendError, match=r"403: deployments.apps is forbidden"):
        await k8s_backend.apply(spec, 2)
    assert free_of(k8s_backend, spec) == start, "a refused apply holds no capacity"
    assert cluster.deployments() == []
    cluster.api.inject_error(
        "create", "deployments", 422, 'Deployment.apps "x" is invalid: spec.template.spec.containers[0].image: Required value'
    )
    with pytest.raises(BackendError, match=r"422: .*is invalid"):
        await k8s_backend.apply(spec, 1)
    await k8s_backend.apply(spec, 1)  # the API accepts it again: nothing was left half-done
    assert [d["spec"]["replicas"] for d in cluster.deployments()] == [1]


async def test_conflict_on_replace_is_reported(cluster, k8s_backend):
    await k8s_backend.apply(toy_spec(), 1)
    # one conflict is retried (the controller writes status all the time); a persistent one is reported
    cluster.api.inject_error(
        "update", "deployments", 409, "Operation cannot be fulfilled on deployments.apps: the object has been modified"
    )
    await k8s_backend.apply(toy_spec(container_args="--quiet"), 1)
    cluster.api.inject_error(
        "update", "deployments", 409, "Operation cannot be fulfilled on deployments.apps: the object has been modified", times=10
    )
    with pytest.raises(BackendError, match="409: Operation cannot be fulfilled"):
        await k8s_backend.apply(toy_spec(container_args="--verbose"), 1)


async def test_quota_refusing_pods_fails_with_the_quota_message(cluster, k8s_backend):
    t = Tracker(k8s_backend)
    cluster.kubelet.fail_pod_creation(
        "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8"
    )
    await k8s_backend.apply(toy_spec(), 1)
    await t.until(lambda: t.of_kind(K.FAILED, "v1"), timeout=10)
    assert "exceeded quota: gpu-quota" in t.of_kind(K.FAILED, "v1")[0].detail
    await t.close()


async def test_helm_chart_functions_are_refused_clearly(k8s_backend):
    with pytest.raises(BackendError, match=r"helmChart .*helm"):
        await k8s_backend.apply(toy_spec(image=""), 1)


async def test_objects_of_others_are_never_touched(cluster, k8s_backend):
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "someone-else", "labels": {"app": "web", "fngate.io/version-id": "v1"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "test/toy"}]}},
        },
    }
    cluster.api.put("deployments", cluster.namespace, foreign, event="ADDED")
    t = Tracker(k8s_backend)
    await k8s_backend.apply(toy_spec(), 1)
    await t.until(lambda: len(t.ready_of("v1")) == 1)
    await k8s_backend.remove("v1")
    assert [d["metadata"]["name"] for d in cluster.deployments()] == ["someone-else"]
    await t.close()


async def test_scale_down_removes_the_pods_the_reconciler_drained(cluster, k8s_backend):
    t = Tracker(k8s_backend)
    spec = toy_spec()
    await k8s_backend.apply(spec, 3)
    await t.until(lambda: len(t.ready_of("v1")) == 3)
    oldest = min(t.ready_of("v1"), key=lambda e: t.events.index(e)).instance_id  # a controller alone would keep it
    await k8s_backend.stop_instances("v1", [oldest])
    assert oldest not in t.ready, "routing stops before the pod goes"
    await k8s_backend.apply(spec, 2)
    for _ in range(100):  # the pod goes (graceful stop), and no other with it
        if oldest not in {p["metadata"]["name"] for p in cluster.pods(live=False)}:
            break
        await asyncio.sleep(0.1)
    assert oldest not in {p["metadata"]["name"] for p in cluster.pods(live=False)}
    assert len(t.ready_of("v1")) == 2 and oldest not in t.ready
    await t.close()


async def test_an_unreachable_cluster_does_not_end_the_event_stream(tmp_path):
    backend = KubernetesBackend("k8s", kubeconfig=str(tmp_path / "missing.yaml"), retry_backoff=0.05)
    t = Tracker(backend)
    await asyncio.sleep(0.3)
    assert not t._task.done(), "events() keeps waiting (and retrying the connection) instead of failing"
    await backend.aclose()
    await t.close()
