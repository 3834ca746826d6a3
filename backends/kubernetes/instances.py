"""Owned pods -> instance events, remembering what each pod last announced.

A Ready pod is READY (again after a container restart, or at a new address); a pod
that stops being ready, fails, is evicted or deleted is LOST; one that never became
ready and ends, or overruns the startup timeout, is FAILED with the reason. Retired
pods (their version removed, or chosen for a scale-down) were already reported LOST
and stay quiet while they terminate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..base import InstanceEvent
from ..base import InstanceEventKind as K
from ..hub import EventHub
from .pods import PodView, view


@dataclass(eq=False)
class _Pod:
    first_seen: float
    last: PodView
    announced: K | None = None  # the outstanding STARTING/READY, if any
    ever_ready: bool = False
    failed: bool = False
    retired: bool = False  # its version was removed: LOST already reported, stay quiet


class PodInstances:
    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._pods: dict[str, _Pod] = {}

    def version_of(self, name: str) -> str:
        pod = self._pods.get(name)
        return pod.last.version_id if pod else ""

    def count(self, version_id: str, gpu_spec_id: str) -> int:
        return sum(1 for p in self._pods.values() if (p.last.version_id, p.last.gpu_spec_id) == (version_id, gpu_spec_id))

    def describe(self, version_id: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "instanceId": n,
                "versionId": p.last.version_id,
                "podIP": p.last.ip,
                "port": p.last.port,
                "ready": p.announced is K.READY,
                "phase": p.last.phase,
                "problem": p.last.problem,
            }
            for n, p in self._pods.items()
            if version_id in (None, p.last.version_id)
        ]

    def retire(self, name: str, detail: str) -> None:
        pod = self._pods.get(name)
        if pod is not None and not pod.retired:
            pod.retired = True
            self._announce_gone(name, pod, K.LOST, detail)

    def retire_version(self, version_id: str, detail: str) -> None:
        for name, pod in list(self._pods.items()):
            if pod.last.version_id == version_id:
                self.retire(name, detail)

    def fail_overdue(self, startup_timeout: float) -> None:
        now = time.monotonic()
        for name, pod in list(self._pods.items()):
            if pod.announced is K.STARTING and not pod.ever_ready and now - pod.first_seen > startup_timeout:
                pod.failed = True
                self._announce_gone(name, pod, K.FAILED, f"instance did not become ready within {startup_timeout:g}s: {pod.last.problem}")

    def resync(self, pods: list[dict[str, Any]]) -> None:
        listed = set()
        for pod in pods:
            listed.add((pod.get("metadata") or {}).get("name", ""))
            self.on_event("MODIFIED", pod)
        for name in [n for n in self._pods if n not in listed]:
            self.on_event("DELETED", None, name)

    def on_event(self, kind: str | None, obj: dict[str, Any] | None, name: str = "") -> None:
        if kind == "DELETED":
            name = name or ((obj or {}).get("metadata") or {}).get("name", "")
            pod = self._pods.pop(name, None)
            if pod is not None and not pod.retired:
                self._announce_gone(name, pod, K.LOST, "pod deleted")
            return
        v = view(obj or {})
        pod = self._pods.get(v.name)
        if pod is None:
            pod = self._pods[v.name] = _Pod(time.monotonic(), v, retired=v.terminating)
        before, pod.last = pod.last, v
        if pod.retired:
            return
        if v.ready:
            if pod.announced is not K.READY or (before.ip, before.port) != (v.ip, v.port):
                pod.announced, pod.ever_ready, pod.failed = K.READY, True, False
                self._emit(K.READY, v.name, v)
            return
        if pod.announced is K.READY:
            self._announce_gone(v.name, pod, K.LOST, v.problem)
        if v.phase in ("Failed", "Succeeded") or v.terminating:
            if pod.announced is K.STARTING:
                self._announce_gone(v.name, pod, K.LOST if pod.ever_ready else K.FAILED, v.problem)
                pod.failed = not pod.ever_ready
            return
        if pod.announced is None and not pod.failed:
            pod.announced = K.STARTING
            self._emit(K.STARTING, v.name, v)

    def _announce_gone(self, name: str, pod: _Pod, kind: K, detail: str) -> None:
        if pod.announced is not None or kind is K.FAILED:
            pod.announced = None
            self._emit(kind, name, pod.last, detail)

    def _emit(self, kind: K, name: str, v: PodView, detail: str = "") -> None:
        ready = kind is K.READY
        self._hub.emit(InstanceEvent(kind, v.version_id, name, v.ip if ready else "", v.port if ready else 0, detail, v.gpu_spec_id))
