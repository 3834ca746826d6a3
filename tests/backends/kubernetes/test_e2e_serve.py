"""End to end: `fngate serve` (a real subprocess) with a kubernetes backend on the fake
cluster. Functions are deployed through the management API with `backend: "k8s"`,
become pods, are invoked through the gateway, survive a killed pod, scale, and leave
nothing behind when undeployed."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import yaml

from tests.conftest import ServeProcess, start_serve
from tests.support.serve_api import AsyncServeApi, ServeApi
from tests.support.waiting import wait_for

ECHO = {
    "name": "k8s-echo",
    "containerImage": "fngate/echo",
    "inferenceUrl": "/echo",
    "inferencePort": 8000,
    "health": {"protocol": "HTTP", "uri": "/health", "port": 8000, "timeout": "PT2S", "expectedStatusCode": 200},
}
GRPC = {
    "name": "k8s-grpc",
    "containerImage": "fngate/grpc-echo",
    "inferenceUrl": "/grpc",
    "inferencePort": 8000,
    "health": {"protocol": "gRPC", "uri": "/", "port": 8000, "timeout": "PT2S", "expectedStatusCode": 200},
}


def spec(n: int) -> dict:
    return {
        "deploymentSpecifications": [
            {
                "gpu": "L40S",
                "instanceType": "NCP.GPU.L40S_1x",
                "backend": "k8s",
                "minInstances": n,
                "maxInstances": n,
                "maxRequestConcurrency": 4,
            }
        ]
    }


def write_config(cluster, tmp_path):
    config = tmp_path / "fngate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "reconciler": {"resyncInterval": 1, "drainTimeout": 2},
                "backends": [
                    {
                        "name": "k8s",
                        "type": "kubernetes",
                        "kubeconfig": str(cluster.kubeconfig),
                        "namespace": cluster.namespace,
                        "startupTimeout": 30,
                        "inventory": {"gpus": {"L40S": 8}, "instanceTypes": [{"name": "NCP.GPU.L40S_1x", "gpu": "L40S"}]},
                    }
                ],
            }
        )
    )
    return config


@pytest.fixture
async def serve(cluster, tmp_path):
    config = write_config(cluster, tmp_path)
    sp = await asyncio.to_thread(start_serve, tmp_path / "fngate", "--config", str(config))
    yield sp
    await asyncio.to_thread(sp.stop)


async def create_and_deploy(api: AsyncServeApi, fn: dict, n: int) -> tuple[str, str]:
    fid, vid = await api.create_function(fn)
    await api.call("POST", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", spec(n))
    return fid, vid


def pods_of(cluster, vid: str, *, ready: bool = False) -> list[dict]:
    return [
        p
        for p in cluster.pods()
        if p["metadata"]["labels"].get("fngate.io/version-id") == vid
        and (not ready or any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"]))
    ]


async def test_deploy_degrade_recover_scale_undeploy(cluster, serve):
    api = ServeApi(serve).aio
    # an API refusal is the function's ERROR, with the API's message as healthInfo
    cluster.api.inject_error("create", "deployments", 403, "deployments.apps is forbidden: exceeded quota: team-gpus")
    bad = await create_and_deploy(api, {**ECHO, "name": "k8s-refused"}, 1)
    await api.wait_status(*bad, "ERROR")
    dep = (await api.call("GET", f"/v2/nvcf/deployments/functions/{bad[0]}/versions/{bad[1]}"))["deployment"]
    assert any("403: deployments.apps is forbidden: exceeded quota" in h["error"] and h["backend"] == "k8s" for h in dep["healthInfo"])
    await api.call("DELETE", f"/v2/nvcf/deployments/functions/{bad[0]}/versions/{bad[1]}")

    fid, vid = await create_and_deploy(api, ECHO, 2)
    await api.wait_status(fid, vid, "ACTIVE")
    [dep] = cluster.deployments()
    assert dep["metadata"]["labels"]["fngate.io/function-id"] == fid and dep["spec"]["replicas"] == 2
    assert len(pods_of(cluster, vid, ready=True)) == 2

    victim = pods_of(cluster, vid)[0]["metadata"]["name"]
    cluster.kubelet.kill_pod(victim, cluster.namespace)
    await api.wait_status(fid, vid, "DEGRADING", timeout=10)
    await api.wait_status(fid, vid, "ACTIVE")
    assert victim in {p["metadata"]["name"] for p in pods_of(cluster, vid, ready=True)}, "recovered in place"

    await api.call("PUT", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", spec(3))
    await wait_for(lambda: len(pods_of(cluster, vid, ready=True)) == 3, 20, what="the cluster")
    assert cluster.deployments()[0]["spec"]["replicas"] == 3

    await api.call("DELETE", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    await api.wait_status(fid, vid, "INACTIVE")
    await wait_for(lambda: not cluster.pods(live=False) and not cluster.deployments() and not cluster.secrets(), 20, what="the cluster")
    assert not cluster.kubelet.processes()


async def test_invoke_http_and_grpc_through_the_gateway(cluster, serve):
    if "http_port" not in serve.ready or "grpc_port" not in serve.ready:
        pytest.skip("the gateway is not wired into fngate serve yet")
    import grpc

    from fngate.backends.samples import grpc_echo_pb2, grpc_echo_pb2_grpc

    api = ServeApi(serve).aio
    echo = await create_and_deploy(api, ECHO, 1)
    rpc = await create_and_deploy(api, GRPC, 1)
    await api.wait_status(*echo, "ACTIVE")
    await api.wait_status(*rpc, "ACTIVE")
    auth = {"Authorization": f"Bearer {serve.admin_key}"}
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(
            f"http://127.0.0.1:{serve.ready['http_port']}/echo", content=b"x" * 100, headers={**auth, "function-id": echo[0]}
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["bodySize"] == 100 and answer["env"]["NVCF_FUNCTION_ID"] == echo[0]
        assert answer["env"]["NVCF_INSTANCE_ID"] in {p["metadata"]["name"] for p in pods_of(cluster, echo[1])}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{serve.ready['grpc_port']}") as channel:
        reply = await grpc_echo_pb2_grpc.EchoStub(channel).Echo(
            grpc_echo_pb2.EchoRequest(message="hi"),
            metadata=(("function-id", rpc[0]), ("authorization", auth["Authorization"])),
            timeout=10,
        )
        assert reply.message == "hi" and reply.metadata["function-id"] == rpc[0]
    for fid, vid in (echo, rpc):
        await api.call("DELETE", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
    await wait_for(lambda: not cluster.pods(live=False) and not cluster.deployments(), 20, what="the cluster")


@pytest.mark.slow  # two replicas and seconds of resyncs; the one-replica tests stay
async def test_replicas_sharing_redis_agree_on_the_cluster(cluster, tmp_path, redis_url):
    """The deploy/kubernetes topology: several fngate replicas on one Redis store and one
    cluster. Each replica's gateway reaches the pods; their control loops do not fight."""
    config = write_config(cluster, tmp_path)
    env = {"FNGATE_ADMIN_KEY": "replicated-admin-key-0123456789abcdef"}
    started = await asyncio.gather(
        *(
            asyncio.to_thread(start_serve, tmp_path / f"fngate-{i}", "--config", str(config), "--store", redis_url, env=env)
            for i in range(2)
        ),
        return_exceptions=True,
    )
    replicas = [sp for sp in started if isinstance(sp, ServeProcess)]
    try:
        for failure in (sp for sp in started if isinstance(sp, BaseException)):
            raise failure
        a, b = ServeApi(replicas[0]).aio, ServeApi(replicas[1]).aio
        fid, vid = await create_and_deploy(a, ECHO, 2)
        await b.wait_status(fid, vid, "ACTIVE")
        await wait_for(lambda: len(pods_of(cluster, vid, ready=True)) == 2, 20, what="the cluster")
        pods = {p["metadata"]["name"] for p in pods_of(cluster, vid)}
        async with httpx.AsyncClient(timeout=10) as client:
            for sp in replicas:
                for _ in range(100):  # each replica's routing snapshot catches up on its own
                    r = await client.post(
                        f"http://127.0.0.1:{sp.ready['http_port']}/echo",
                        content=b"hi",
                        headers={"Authorization": f"Bearer {env['FNGATE_ADMIN_KEY']}", "function-id": fid},
                    )
                    if r.status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert r.status_code == 200, r.text
                assert r.json()["env"]["NVCF_INSTANCE_ID"] in pods
        await asyncio.sleep(2)  # a few reconciler resyncs later: still the same two pods
        assert {p["metadata"]["name"] for p in pods_of(cluster, vid)} == pods
        assert [d["spec"]["replicas"] for d in cluster.deployments()] == [2]
        await b.call("DELETE", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}")
        await a.wait_status(fid, vid, "INACTIVE")
        await wait_for(lambda: not cluster.pods(live=False) and not cluster.deployments(), 20, what="the cluster")
    finally:
        for sp in replicas:
            await asyncio.to_thread(sp.stop)


@pytest.mark.slow  # two replicas and a 12 s request; test_drain_handover.py is the short version
async def test_a_drain_the_dead_leader_began_is_finished_by_the_new_one(cluster, tmp_path, redis_url):
    """Two replicas on one Redis share the cluster. A scale-down from 2 pods to 1 is draining
    a pod that has a long request (through the follower's gateway) when the leader is killed
    (kill -9). The new leader adopts both pods, keeps the drained one out of routing, and
    deletes it only once its request has ended; the other pod is never touched. Before, the
    new leader patched the Deployment to 1 replica before its pod list came in, so the
    cluster deleted a pod while its request ran."""
    config = write_config(cluster, tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["reconciler"] = {"resyncInterval": 1, "drainTimeout": 120}
    settings["leader"] = {"ttl": 2, "renewInterval": 0.5}
    config.write_text(yaml.safe_dump(settings))
    env = {"FNGATE_ADMIN_KEY": "replicated-admin-key-0123456789abcdef"}
    replicas: list[ServeProcess] = []
    try:
        for i in range(2):  # one after the other: the first leads
            replicas.append(
                await asyncio.to_thread(start_serve, tmp_path / f"fngate-{i}", "--config", str(config), "--store", redis_url, env=env)
            )
        leader, follower = replicas
        assert "this replica leads the control loops" in leader.output()
        api = ServeApi(follower).aio
        fid, vid = await create_and_deploy(api, ECHO, 2)
        await api.wait_status(fid, vid, "ACTIVE")
        await wait_for(lambda: len(pods_of(cluster, vid, ready=True)) == 2, 20, what="two ready pods")
        pods = {p["metadata"]["name"] for p in pods_of(cluster, vid)}
        gateway = f"http://127.0.0.1:{follower.ready['http_port']}"
        auth = {"Authorization": f"Bearer {env['FNGATE_ADMIN_KEY']}", "function-id": fid}
        async with httpx.AsyncClient(timeout=60) as client:
            await wait_for(lambda: _served(client, gateway, auth), 20, what="the follower's gateway serving")
            ended: dict[str, float] = {}  # pod -> when its request ended
            deleted: dict[str, float] = {}  # pod -> when it was first seen deleted

            async def slow() -> httpx.Response:
                r = await client.post(f"{gateway}/echo?delay=12", content=b"x", headers=auth)
                if r.status_code == 200:
                    ended[r.json()["env"]["NVCF_INSTANCE_ID"]] = asyncio.get_running_loop().time()
                return r

            async def watch_pods() -> None:
                while True:
                    live = {p["metadata"]["name"] for p in pods_of(cluster, vid)}
                    for name in pods - live:
                        deleted.setdefault(name, asyncio.get_running_loop().time())
                    await asyncio.sleep(0.05)

            watcher = asyncio.ensure_future(watch_pods())
            calls = [asyncio.ensure_future(slow())]
            await asyncio.sleep(0.3)
            calls.append(asyncio.ensure_future(slow()))  # the less busy pod: one request on each
            await asyncio.sleep(1.0)
            await api.call("PUT", f"/v2/nvcf/deployments/functions/{fid}/versions/{vid}", spec(1))

            async def draining() -> list[str]:
                fn = (await api.call("GET", f"/v2/nvcf/functions/{fid}/versions/{vid}"))["function"]
                return [i["instanceId"] for i in fn.get("activeInstances", []) if i.get("draining")]

            [victim] = await wait_for(draining, 10, what="the scale-down draining a pod")
            leader.proc.kill()  # mid-drain, no hand-over
            leader.proc.wait()
            await wait_for(lambda: "this replica leads the control loops" in follower.output(), 10, what="the follower leading")
            answers = await asyncio.gather(*calls)
            await wait_for(lambda: victim in deleted, 30, what="the drained pod deleted")
            watcher.cancel()
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert set(deleted) == {victim}, f"a pod that was not drained was deleted: {deleted}"
        # a request cut by a deleted pod is retried on the other one: both would end there
        assert set(ended) == pods, f"a pod was deleted while its request ran: {ended}"
        assert deleted[victim] >= ended[victim], "the drained pod was deleted while its request ran"
        assert [d["spec"]["replicas"] for d in cluster.deployments()] == [1]
        assert await api.status(fid, vid) == "ACTIVE"
    finally:
        for sp in replicas:
            await asyncio.to_thread(sp.stop)


async def _served(client: httpx.AsyncClient, gateway: str, headers: dict[str, str]) -> bool:
    return (await client.post(f"{gateway}/echo", content=b"hi", headers=headers)).status_code == 200
