"""The fake cluster's controllers and kubelet: Deployments -> Pods -> local processes.

The Deployment controller keeps `replicas` pods per Deployment (recreating on a
template change, deleting not-ready then newest on scale-down, reporting
ReplicaFailure when pod creation is refused). The kubelet runs each pod's
container as a process from the image catalog, bound to the pod's own loopback
IP (127.x.y.z) on the container port, probes its readinessProbe (httpGet or
grpc) and flips the Ready condition, restarts crashed containers with backoff
(CrashLoopBackOff), and reports unknown images as ErrImagePull.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import os
import random
import signal
import socket
import tempfile
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fngate.backends.base import BackendError, HealthCheck
from fngate.backends.catalog import ImageCatalog
from fngate.backends.probe import probe

from .fake_apiserver import FakeApiServer, now


def _hash(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]


def _free_ip(port: int) -> str:
    for _ in range(100):
        ip = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((ip, port))
                return ip
            except OSError:
                continue
    raise RuntimeError(f"no free loopback address for port {port}")


@dataclass(eq=False)
class _Running:
    namespace: str
    name: str
    task: asyncio.Task | None = None
    process: asyncio.subprocess.Process | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fake-pod-")))


class FakeKubelet:
    def __init__(
        self,
        api: FakeApiServer,
        catalog: ImageCatalog,
        *,
        probe_interval: float = 0.1,
        restart_backoff: float = 0.3,
        stop_grace: float = 3.0,
    ) -> None:
        self.api = api
        self.catalog = catalog
        self.probe_interval = probe_interval
        self.restart_backoff = restart_backoff
        self.stop_grace = stop_grace
        self.quota_message = ""  # when set, pod creation is refused with this message
        self._pods: dict[tuple[str, str], _Running] = {}
        self._order: dict[str, int] = {}  # pod name -> creation sequence
        self._dirty = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Future[None]] = set()  # held so the loop cannot collect them mid-run
        api.on_change = self._dirty.set

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # -- test hooks ----------------------------------------------------------------------
    def kill_pod(self, name: str, namespace: str = "default") -> int:
        """SIGKILL the pod's container process (it crashed); returns its pid."""
        proc = self._pods[(namespace, name)].process
        assert proc is not None and proc.returncode is None, f"pod {name} has no running process"
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.pid

    def evict_pod(self, name: str, namespace: str = "default") -> None:
        """Node pressure eviction: the container is killed and the pod ends Failed/Evicted."""
        run = self._pods.pop((namespace, name))
        if run.task:
            run.task.cancel()
        pod = self.api.objects[("pods", namespace, name)]
        pod["status"].update(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
        self._set_ready(pod, False)
        self.api.put("pods", namespace, pod, event="MODIFIED")
        self._background(self._kill(run, graceful=False))

    def vanish_pod(self, name: str, namespace: str = "default") -> None:
        """The node died and the pod was force-deleted: the object is gone at once."""
        run = self._pods.pop((namespace, name))
        if run.task:
            run.task.cancel()
        self.api.remove("pods", namespace, name)
        self._background(self._kill(run, graceful=False))

    def fail_pod_creation(self, message: str) -> None:
        self.quota_message = message
        self._dirty.set()

    def processes(self) -> dict[str, int]:
        return {name: r.process.pid for (_, name), r in self._pods.items() if r.process and r.process.returncode is None}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._control_loop())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        runs = list(self._pods.values())
        self._pods.clear()
        for run in runs:
            if run.task:
                run.task.cancel()
        await asyncio.gather(*(self._kill(r, graceful=False) for r in runs))

    async def _control_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self._reconcile()
            await asyncio.sleep(0.02)  # batch bursts of changes

    # -- the Deployment controller ------------------------------------------------------------
    def _reconcile(self) -> None:
        deployments = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self.api.list("deployments")}
        pods = self.api.list("pods")
        for pod in pods:
            owner = (pod["metadata"].get("ownerReferences") or [{}])[0].get("name")
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(key)
            elif (key[0], owner) not in deployments:
                self._delete_pod(key)
        for (ns, name), dep in deployments.items():
            self._reconcile_deployment(
                ns, name, dep, [p for p in pods if (p["metadata"].get("ownerReferences") or [{}])[0].get("name") == name]
            )

    def _reconcile_deployment(self, ns: str, name: str, dep: dict, pods: list[dict]) -> None:
        template = dep["spec"]["template"]
        want_hash = _hash(template)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") != "Failed"]
        for p in live:
            if p["metadata"]["labels"].get("pod-template-hash") != want_hash:
                self._delete_pod((ns, p["metadata"]["name"]))
        live = [p for p in live if p["metadata"]["labels"].get("pod-template-hash") == want_hash]
        replicas = int(dep["spec"].get("replicas", 1))
        failure = ""
        if len(live) > replicas:
            # as the ReplicaSet controller: not-ready first, then the lowest pod-deletion-cost, then the newest
            victims = sorted(live, key=lambda p: (self._is_ready(p), self._deletion_cost(p), -self._order.get(p["metadata"]["name"], 0)))
            for p in victims[: len(live) - replicas]:
                self._delete_pod((ns, p["metadata"]["name"]))
            live = [p for p in live if p not in victims[: len(live) - replicas]]
        for _ in range(replicas - len(live)):
            if self.quota_message:
                failure = self.quota_message
                break
            live.append(self._create_pod(ns, dep, want_hash))
        ready = sum(1 for p in live if self._is_ready(p))
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(live),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": len(live),
        }
        if failure:
            status["conditions"] = [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": f'pods "{name}-x" is forbidden: {failure}',
                    "lastUpdateTime": now(),
                }
            ]
        if status != dep.get("status"):
            current = self.api.objects[("deployments", ns, name)]
            current["status"] = status
            self.api.put("deployments", ns, current, event="MODIFIED")

    @staticmethod
    def _deletion_cost(pod: dict) -> int:
        return int((pod["metadata"].get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost", 0))

    @staticmethod
    def _is_ready(pod: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or ())

    def _create_pod(self, ns: str, dep: dict, template_hash: str) -> dict:
        template = copy.deepcopy(dep["spec"]["template"])
        name = f"{dep['metadata']['name']}-{template_hash[:10]}-{uuid.uuid4().hex[:5]}"
        container = template["spec"]["containers"][0]
        port = int((container.get("ports") or [{"containerPort": 8000}])[0]["containerPort"])
        meta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now(),
                "labels": {**(meta.get("labels") or {}), "pod-template-hash": template_hash},
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": dep["metadata"]["name"],
                        "uid": dep["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": "fake-node"},
            "status": {
                "phase": "Pending",
                "podIP": _free_ip(port),
                "hostIP": "127.0.0.1",
                "startTime": now(),
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
                "containerStatuses": [self._container_status(container, waiting=("ContainerCreating", ""))],
            },
        }
        pod["status"]["podIPs"] = [{"ip": pod["status"]["podIP"]}]
        self._order[name] = len(self._order) + 1
        created = self.api.put("pods", ns, pod, event="ADDED")
        run = self._pods[(ns, name)] = _Running(ns, name)
        run.task = asyncio.create_task(self._run_pod(run))
        return created

    def _delete_pod(self, key: tuple[str, str]) -> None:
        pod = self.api.objects.get(("pods", *key))
        if pod is not None and not pod["metadata"].get("deletionTimestamp"):
            pod["metadata"]["deletionTimestamp"] = now()
            self._set_ready(pod, False)
            self.api.put("pods", key[0], pod, event="MODIFIED")
        self._terminate(key)

    def _terminate(self, key: tuple[str, str]) -> None:
        run = self._pods.pop(key, None)
        if run is None:
            if ("pods", *key) in self.api.objects and key not in self._pods:
                self.api.remove("pods", *key)
            return
        if run.task:
            run.task.cancel()

        async def finish() -> None:
            await self._kill(run, graceful=True)
            self.api.remove("pods", *key)

        self._background(finish())

    # -- the kubelet -----------------------------------------------------------------------------
    @staticmethod
    def _container_status(
        container: dict, *, waiting: tuple[str, str] | None = None, restarts: int = 0, ready: bool = False, last_exit: int | None = None
    ) -> dict:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}} if waiting else {"running": {"startedAt": now()}}
        status = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready,
            "restartCount": restarts,
            "started": waiting is None,
            "state": state,
        }
        if last_exit is not None:
            status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
        return status

    def _pod(self, run: _Running) -> dict | None:
        return self.api.objects.get(("pods", run.namespace, run.name))

    def _set_ready(self, pod: dict, ready: bool) -> None:
        for c in pod["status"]["conditions"]:
            if c["type"] == "Ready":
                c["status"] = "True" if ready else "False"
        for cs in pod["status"].get("containerStatuses") or ():
            cs["ready"] = ready

    def _update(self, run: _Running, *, phase: str | None = None, ready: bool | None = None, container: dict | None = None) -> None:
        pod = self._pod(run)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        before = copy.deepcopy(pod["status"])
        if phase:
            pod["status"]["phase"] = phase
        if container is not None:
            pod["status"]["containerStatuses"] = [container]
        if ready is not None:
            self._set_ready(pod, ready)
        if pod["status"] != before:
            self.api.put("pods", run.namespace, pod, event="MODIFIED")

    def _argv_env(self, pod: dict, run: _Running) -> tuple[list[str], dict[str, str]]:
        container = pod["spec"]["containers"][0]
        port = int((container.get("ports") or [{"containerPort": 8000}])[0]["containerPort"])
        argv = self.catalog.command(container["image"], pod["status"]["podIP"], port) + list(container.get("args") or ())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PORT": str(port)}
        for e in container.get("env") or ():
            field_path = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            env[e["name"]] = pod["metadata"]["name"] if field_path == "metadata.name" else str(e.get("value", ""))
        for vol in pod["spec"].get("volumes") or ():  # "mount" secrets into the pod's own directory
            secret = self.api.objects.get(("secrets", run.namespace, (vol.get("secret") or {}).get("secretName", "")))
            if secret is not None:
                for key, value in (secret.get("data") or {}).items():
                    (run.workdir / key).write_bytes(base64.b64decode(value))
                for key, name in (("secrets.json", "FNGATE_SECRETS_FILE"), ("accounts-secrets.json", "FNGATE_ACCOUNTS_SECRETS_FILE")):
                    if key in (secret.get("data") or {}):
                        env[name] = str(run.workdir / key)
        return argv, env

    async def _run_pod(self, run: _Running) -> None:
        pod = self._pod(run)
        if pod is None:
            return
        container = pod["spec"]["containers"][0]
        try:
            argv, env = self._argv_env(pod, run)
        except BackendError as exc:
            await asyncio.sleep(0.05)
            self._update(run, container=self._container_status(container, waiting=("ErrImagePull", str(exc))))
            await asyncio.sleep(0.3)
            self._update(
                run,
                container=self._container_status(container, waiting=("ImagePullBackOff", f'Back-off pulling image "{container["image"]}"')),
            )
            return
        health = self._health(container)
        restarts, last_exit = 0, None
        while True:
            with open(run.workdir / "container.log", "ab") as log:
                run.process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            self._update(
                run, phase="Running", ready=False, container=self._container_status(container, restarts=restarts, last_exit=last_exit)
            )
            exited = asyncio.ensure_future(run.process.wait())
            ready, failures = False, 0
            while not exited.done():
                ok = health is None or await probe(health, pod["status"]["podIP"], health.port) is None
                failures = 0 if ok else failures + 1
                if ok != ready and (ok or failures >= 3):
                    ready = ok
                    self._update(run, ready=ready)
                await asyncio.wait({exited}, timeout=self.probe_interval)
            restarts += 1
            last_exit = run.process.returncode
            self._update(
                run,
                ready=False,
                container=self._container_status(
                    container,
                    waiting=("CrashLoopBackOff", f"back-off restarting failed container {container['name']}"),
                    restarts=restarts,
                    last_exit=last_exit,
                ),
            )
            await asyncio.sleep(min(self.restart_backoff * 2 ** (restarts - 1), 5.0))

    @staticmethod
    def _health(container: dict) -> HealthCheck | None:
        probe_spec = container.get("readinessProbe")
        if not probe_spec:
            return None
        timeout = float(probe_spec.get("timeoutSeconds", 1))
        if "grpc" in probe_spec:
            return HealthCheck(protocol="gRPC", port=int(probe_spec["grpc"]["port"]), timeout_s=timeout)
        get = probe_spec["httpGet"]
        return HealthCheck(protocol="HTTP", uri=get.get("path", "/"), port=int(get["port"]), timeout_s=timeout)

    async def _kill(self, run: _Running, *, graceful: bool) -> None:
        proc = run.process
        if proc is None or proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, self.stop_grace), (signal.SIGKILL, 5.0)) if graceful else ((signal.SIGKILL, 5.0),):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(proc.wait(), wait)
                return
            except TimeoutError:
                continue
