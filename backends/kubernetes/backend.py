"""KubernetesBackend: function instances as pods of one Deployment per version.

apply() creates or updates the Deployment (and its Secret) and patches `replicas`;
remove() first reports every pod LOST, so routing stops, then deletes what it
made. Instances are followed with list-then-watch on the owned pods: a Ready pod
is a READY instance at its pod IP and container port; a deleted, failed, evicted
or unready pod is LOST; a pod that never becomes ready within the startup timeout
(image pull failure, crash loop, unschedulable) is FAILED with the reason. The
watch resumes from its resourceVersion and re-lists after 410 Gone or an error.

aclose() stops watching but leaves the workloads running: a restarted control
plane re-adopts them, since apply() finds its Deployments by name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..base import BackendError, InstanceEvent, InstanceSpec, nvcf_environment
from ..base import InstanceEventKind as K
from ..hub import EventHub
from ..inventory import Inventory, PlacementError
from . import manifests as m
from ._api import KubeApi, KubeError, connect
from .instances import PodInstances

log = logging.getLogger("fngate.backends.kubernetes")


@dataclass(eq=False)
class _Group:
    name: str  # the Deployment's name
    spec: InstanceSpec
    replicas: int
    applied_at: float = field(default_factory=time.monotonic)
    reported: str = ""  # the Deployment-level failure already reported


class KubernetesBackend:
    def __init__(
        self,
        name: str = "kubernetes",
        *,
        namespace: str = "default",
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        inventory: Inventory | None = None,
        node_selectors: Mapping[str, Mapping[str, str]] | None = None,
        startup_timeout: float = 1800.0,  # NVCF gives a container 30 min to become healthy
        probe_period: int = 5,
        termination_grace: int = 30,
        image_pull_secrets: tuple[str, ...] = (),
        region: str = "kubernetes",
        env: str = "fngate",
        watch_timeout: int = 240,
        retry_backoff: float = 0.2,
        api: KubeApi | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self._connect_args: dict[str, Any] = {"kubeconfig": kubeconfig, "context": context, "in_cluster": in_cluster}
        self.inventory = inventory or Inventory()
        self.node_selectors = {k: dict(v) for k, v in (node_selectors or {}).items()}
        self.startup_timeout = startup_timeout
        self.probe_period = probe_period
        self.termination_grace = termination_grace
        self.image_pull_secrets = tuple(image_pull_secrets)
        self.region = region
        self.env = env
        self.watch_timeout = watch_timeout
        self.retry_backoff = retry_backoff
        self._api = api
        self._hub = EventHub()
        self._instances = PodInstances(self._hub)
        self._groups: dict[tuple[str, str], _Group] = {}
        self._holders: dict[str, set[str]] = {}  # Deployment name -> its inventory holders
        self._tasks: list[asyncio.Task] = []
        self._start_lock = asyncio.Lock()
        self._connector: asyncio.Task | None = None
        self._closed = False

    _SETTINGS = frozenset(
        {
            "name",
            "type",
            "namespace",
            "kubeconfig",
            "context",
            "inCluster",
            "inventory",
            "startupTimeout",
            "probePeriod",
            "terminationGracePeriod",
            "imagePullSecrets",
            "region",
        }
    )

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> KubernetesBackend:
        """A `type: kubernetes` entry of the config file's `backends` list (see README, Kubernetes).
        `inventory` is the GPU quota fngate may use in the cluster, as for the local backend, and
        each instance type may carry the `nodeSelector` its pods get."""
        unknown = set(cfg) - cls._SETTINGS
        if unknown:
            raise ValueError(
                f"backend {name}: unknown setting(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(cls._SETTINGS - {'name', 'type'}))})"
            )
        inventory = cfg.get("inventory") or {}
        types = inventory.get("instanceTypes") or []
        return cls(
            name,
            namespace=str(cfg.get("namespace", "default")),
            kubeconfig=cfg.get("kubeconfig"),
            context=cfg.get("context"),
            in_cluster=bool(cfg.get("inCluster", False)),
            inventory=Inventory.from_config(inventory),
            node_selectors={str(t["name"]): t["nodeSelector"] for t in types if t.get("nodeSelector")},
            startup_timeout=float(cfg.get("startupTimeout", 1800)),
            probe_period=int(cfg.get("probePeriod", 5)),
            termination_grace=int(cfg.get("terminationGracePeriod", 30)),
            image_pull_secrets=tuple(cfg.get("imagePullSecrets") or ()),
            region=str(cfg.get("region", "kubernetes")),
        )

    # -- Backend protocol ----------------------------------------------------------------
    async def apply(self, spec: InstanceSpec, replicas: int) -> None:
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if not spec.container_image or spec.configuration.get("helmChart"):
            raise BackendError(
                "the kubernetes backend runs container functions only: helmChart functions need the helm "
                "tool, which this installation does not provide"
            )
        api = await self._started()
        key = (spec.version_id, spec.gpu_spec_id)
        name = m.deployment_name(spec)
        self._reserve(name, spec, replicas)
        body = m.deployment(spec, replicas, self._settings(spec))
        try:
            await self._converge(api, spec, body)
        except KubeError as exc:
            group = self._groups.get(key)
            self._release(name, group.replicas if group else 0)
            raise BackendError(exc.message) from None
        group = self._groups.get(key)
        if group is None or group.replicas != replicas or group.spec != spec:
            self._groups[key] = _Group(name, spec, replicas)

    async def remove(self, version_id: str, *, graceful: bool = True) -> None:
        """Pods always get their terminationGracePeriodSeconds from the kubelet, so `graceful`
        changes nothing here (the reconciler drains before it calls this)."""
        api = await self._started()
        # routing stops first: every pod of the version is LOST before anything is deleted
        self._instances.retire_version(version_id, "function version removed")
        selector = m.version_selector(version_id)
        try:
            names = {d["metadata"]["name"] for d in await api.list_deployments(selector)}
            names |= {g.name for k, g in self._groups.items() if k[0] == version_id}
            for name in sorted(names):
                await api.delete_deployment(name)
                await api.delete_secret(name + "-secrets")
        except KubeError as exc:
            raise BackendError(exc.message) from None
        for key in [k for k in self._groups if k[0] == version_id]:
            self._release(self._groups.pop(key).name, 0)

    async def events(self) -> AsyncIterator[InstanceEvent]:
        # never fails: an unreachable cluster is retried in the background (and apply() says why)
        if self._connector is None and not self._closed:
            self._connector = asyncio.create_task(self._keep_connecting(), name=f"{self.name}-connect")
        async for event in self._hub.subscribe():
            yield event

    async def stop_instances(self, version_id: str, instance_ids: list[str], *, graceful: bool = True) -> None:
        """Mark the chosen (already drained) pods as the ones to go: they are LOST at once and
        get the lowest pod-deletion-cost, so the scale-down that follows removes exactly them."""
        api = await self._started()
        for name in instance_ids:
            if self._instances.version_of(name) != version_id:
                continue
            self._instances.retire(name, "scaled down")
            try:
                await api.annotate_pod(name, {m.DELETION_COST: "-1000000"})
            except KubeError as exc:
                if exc.status != 404:
                    raise BackendError(exc.message) from None

    def capacity(self) -> list[dict[str, Any]]:
        return self.inventory.capacity()

    async def aclose(self) -> None:
        self._closed = True
        if self._connector is not None:
            self._tasks.append(self._connector)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._api is not None:
            await self._api.aclose()
        self._hub.close()

    # -- introspection (CLI, tests) ----------------------------------------------------------
    def instances(self, version_id: str | None = None) -> list[dict[str, Any]]:
        return self._instances.describe(version_id)

    async def _converge(self, api: KubeApi, spec: InstanceSpec, body: dict[str, Any], attempts: int = 4) -> None:
        """Create the Deployment, replace it when the spec changed, or patch `replicas`.
        A write conflict (someone else, e.g. the controller, wrote in between) is retried."""
        name = body["metadata"]["name"]
        for attempt in range(attempts):
            current = await api.get_deployment(name)
            if current is None or m.spec_hash(current) != m.spec_hash(body):
                await self._put_secret(api, spec)
            try:
                if current is None:
                    await api.create_deployment(body)
                elif m.spec_hash(current) != m.spec_hash(body):
                    body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                    await api.replace_deployment(name, body)
                elif (current.get("spec") or {}).get("replicas") != body["spec"]["replicas"]:
                    await api.scale_deployment(name, body["spec"]["replicas"])
                return
            except KubeError as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))

    @staticmethod
    async def _put_secret(api: KubeApi, spec: InstanceSpec) -> None:
        if m.has_secrets(spec):
            await api.put_secret(m.secret(spec))
        else:  # secrets dropped from the function: do not leave the old ones in the cluster
            await api.delete_secret(m.secret_name(spec))

    # -- placement -----------------------------------------------------------------------
    def _settings(self, spec: InstanceSpec) -> m.PodSettings:
        t = next((c for c in self.inventory.capacity() if c["name"] == spec.instance_type), None)
        return m.PodSettings(
            gpu_count=int(t["gpuCount"]) if t else 1,
            node_selector=self.node_selectors.get(spec.instance_type) or {"fngate.io/gpu": spec.gpu or (t or {}).get("gpu", "")},
            probe_period_s=self.probe_period,
            termination_grace_s=self.termination_grace,
            image_pull_secrets=self.image_pull_secrets,
            env=self._nvcf_env(spec),
        )

    def _nvcf_env(self, spec: InstanceSpec) -> dict[str, str]:
        return nvcf_environment(spec, backend=self.name, env=self.env, region=self.region)

    def _reserve(self, name: str, spec: InstanceSpec, replicas: int) -> None:
        """Hold `replicas` instances' worth of the configured GPU quota, all or nothing."""
        held = self._holders.setdefault(name, set())
        taken = []
        try:
            for i in range(replicas):
                holder = f"{name}#{i}"
                if holder not in held:
                    self.inventory.reserve(holder, spec.instance_type, spec.gpu)
                    taken.append(holder)
        except PlacementError as exc:
            for holder in taken:
                self.inventory.release(holder)
            raise PlacementError(f"{exc} (asked for {replicas} instances)") from None
        held.update(taken)
        self._release(name, replicas)

    def _release(self, name: str, keep: int) -> None:
        held = self._holders.get(name, set())
        for holder in [h for h in held if int(h.rsplit("#", 1)[1]) >= keep]:
            self.inventory.release(holder)
            held.discard(holder)
        if not held:
            self._holders.pop(name, None)

    # -- following pods ---------------------------------------------------------------------
    async def _started(self) -> KubeApi:
        if self._closed:
            raise RuntimeError("backend is closed")
        async with self._start_lock:
            if self._api is None:
                try:
                    client = await connect(**self._connect_args)
                except Exception as exc:  # bad kubeconfig, missing service account
                    raise BackendError(f"cannot connect to Kubernetes: {exc}") from None
                self._api = KubeApi(client, self.namespace)
            if not self._tasks:
                self._tasks = [
                    asyncio.create_task(self._follow_pods(), name=f"{self.name}-pods"),
                    asyncio.create_task(self._check_startups(), name=f"{self.name}-startups"),
                ]
        return self._api

    async def _keep_connecting(self) -> None:
        backoff = self.retry_backoff
        while True:
            try:
                await self._started()
                return
            except BackendError as exc:
                log.warning("%s (retrying in %.1fs)", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _follow_pods(self) -> None:
        assert self._api is not None
        backoff, rv = self.retry_backoff, ""
        while True:
            try:
                if not rv:
                    pods, rv = await self._api.list_pods(m.OWNED_SELECTOR)
                    self._instances.resync(pods)
                began, seen = time.monotonic(), 0
                async for event in self._api.watch_pods(m.OWNED_SELECTOR, rv, timeout_s=self.watch_timeout):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # 410 Gone (too old) or another failure: start over from a list
                        log.info("pod watch ended: %s %s; re-listing", obj.get("code"), obj.get("message"))
                        rv = ""
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    seen += 1
                    if kind != "BOOKMARK":
                        self._instances.on_event(kind, obj)
                if rv and not seen and time.monotonic() - began < 1.0:
                    await asyncio.sleep(backoff)  # a server that ends watches at once: do not spin
                backoff = self.retry_backoff
            except asyncio.CancelledError:
                raise
            except (TimeoutError, KubeError, aiohttp.ClientError, OSError, ValueError) as exc:
                log.warning("pod watch failed (%s); re-listing in %.1fs", exc, backoff)
                rv = ""
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _check_startups(self) -> None:
        """FAILED for pods that never became ready in time, and for Deployments whose
        pods cannot even be created (quota, admission): the reasons become healthInfo."""
        interval = max(0.2, min(5.0, self.startup_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self._instances.fail_overdue(self.startup_timeout)
            await self._check_deployments(time.monotonic())

    async def _check_deployments(self, now: float) -> None:
        assert self._api is not None
        for (version_id, gpu_spec_id), group in list(self._groups.items()):
            have = self._instances.count(version_id, gpu_spec_id)
            if group.replicas == 0 or have >= group.replicas or now - group.applied_at < 1.0:
                continue
            try:
                dep = await self._api.get_deployment(group.name)
            except KubeError as exc:
                log.warning("cannot read deployment %s: %s", group.name, exc.message)
                continue
            for cond in ((dep or {}).get("status") or {}).get("conditions") or ():
                if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                    message = f"pods cannot be created: {cond.get('message') or cond.get('reason')}"
                    if message != group.reported:
                        group.reported = message
                        self._hub.emit(InstanceEvent(K.FAILED, version_id, group.name, detail=message, gpu_spec_id=gpu_spec_id))
