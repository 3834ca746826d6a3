"""Reading a Pod object: is it an instance the gateway can use, and if not, why.

Pure functions over the Pod's JSON (status.phase, conditions, containerStatuses),
so the rules are testable without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import manifests as m


@dataclass(frozen=True, slots=True)
class PodView:
    name: str
    version_id: str
    gpu_spec_id: str
    ip: str
    port: int
    ready: bool
    terminating: bool
    phase: str
    problem: str  # why it is not ready


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or ()}


def view(pod: dict[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    lbl = {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or [{}]
    port = 0
    for p in containers[0].get("ports") or ():
        if p.get("name") == "inference" or not port:
            port = int(p.get("containerPort") or 0)
    conds = _conditions(status)
    phase = status.get("phase", "Pending")
    terminating = bool(meta.get("deletionTimestamp"))
    ip = status.get("podIP") or ""
    ready = phase == "Running" and conds.get("Ready", {}).get("status") == "True" and bool(ip) and not terminating
    problem = ""
    if phase == "Failed":
        problem = f"pod failed: {status.get('reason') or 'Failed'}" + (f": {status['message']}" if status.get("message") else "")
    elif conds.get("PodScheduled", {}).get("status") == "False":
        c = conds["PodScheduled"]
        problem = f"pod cannot be scheduled: {c.get('reason', '')}: {c.get('message', '')}".rstrip(": ")
    for cs in status.get("containerStatuses") or ():
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        if reason:
            problem = f"container {reason}" + (f": {waiting['message']}" if waiting.get("message") else "")
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if last and not problem:
            problem = f"container exited with code {last.get('exitCode')} ({last.get('reason', '')})"
    if not ready and not problem:
        problem = "terminating" if terminating else ("not ready" if phase == "Running" else f"pod {phase.lower()}")
    return PodView(
        name=meta.get("name", ""),
        version_id=lbl.get(m.VERSION_ID, ""),
        gpu_spec_id=lbl.get(m.GPU_SPEC_ID, ""),
        ip=ip,
        port=port,
        ready=ready,
        terminating=terminating,
        phase=phase,
        problem=problem,
    )
