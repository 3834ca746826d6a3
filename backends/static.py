"""StaticBackend: functions served by servers that already run elsewhere.

The deployment's `configuration` lists the endpoints
(`{"endpoints": ["http://127.0.0.1:9000", ...]}`); `apply(spec, n)` uses the first
n of them. Each is health-checked like a local instance: READY when the check
passes (FAILED if it never does within the startup timeout), LOST after
`unhealthy_after` failures in a row, READY again when it recovers. Nothing is
started or stopped; "stopping" an instance just stops routing to it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from .base import BackendError, InstanceEvent, InstanceSpec
from .base import InstanceEventKind as K
from .hub import EventHub
from .probe import probe


def parse_endpoints(configuration: dict[str, Any]) -> list[tuple[str, int]]:
    raw = configuration.get("endpoints")
    if not isinstance(raw, list) or not raw:
        raise BackendError('the static backend needs configuration {"endpoints": ["http://host:port", ...]}')
    out = []
    for url in raw:
        parts = urlsplit(url if "://" in str(url) else f"http://{url}")
        if not parts.hostname or not parts.port:
            raise BackendError(f"static endpoint {url!r} needs a host and a port")
        out.append((parts.hostname, parts.port))
    return out


class StaticBackend:
    def __init__(
        self, name: str = "static", *, probe_interval: float = 1.0, startup_timeout: float = 60.0, unhealthy_after: int = 3
    ) -> None:
        self.name = name
        self.probe_interval = probe_interval
        self.startup_timeout = startup_timeout
        self.unhealthy_after = unhealthy_after
        # (version id, gpu spec id) -> endpoint index -> (instance id, watcher task)
        self._groups: dict[tuple[str, str], dict[int, tuple[str, asyncio.Task]]] = {}
        self._hub = EventHub()

    def refusal(self, spec: InstanceSpec) -> str | None:
        """Why `spec` can never run here (no usable endpoints in its configuration), or None."""
        try:
            parse_endpoints(spec.configuration)
        except BackendError as exc:
            return str(exc)
        return None

    async def apply(self, spec: InstanceSpec, replicas: int) -> None:
        endpoints = parse_endpoints(spec.configuration)
        key = (spec.version_id, spec.gpu_spec_id)
        group = self._groups.setdefault(key, {})
        wanted = min(replicas, len(endpoints))
        for idx in [i for i in group if i >= wanted]:
            await self._stop(group.pop(idx)[1])
        for idx in range(wanted):
            if idx not in group or group[idx][1].done():  # new, or FAILED earlier: check it again
                inst_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{spec.version_id}/{spec.gpu_spec_id}/{idx}"))
                host, port = endpoints[idx]
                task = asyncio.create_task(self._watch(spec, inst_id, host, port))
                group[idx] = (inst_id, task)
        if replicas > len(endpoints):
            raise BackendError(f"the static backend lists {len(endpoints)} endpoint(s); {replicas} instances requested")

    async def remove(self, version_id: str, *, graceful: bool = True) -> None:
        for key in [k for k in self._groups if k[0] == version_id]:
            for _, task in self._groups.pop(key).values():
                await self._stop(task)

    async def stop_instances(self, version_id: str, instance_ids: list[str], *, graceful: bool = True) -> None:
        for key, group in self._groups.items():
            if key[0] != version_id:
                continue
            for idx in [i for i, (iid, _) in group.items() if iid in instance_ids]:
                await self._stop(group.pop(idx)[1])

    def events(self) -> AsyncIterator[InstanceEvent]:
        return self._hub.subscribe()

    def capacity(self) -> list[dict[str, Any]]:
        return []  # a static backend places nothing

    async def aclose(self) -> None:
        for version_id in {k[0] for k in self._groups}:
            await self.remove(version_id)
        self._hub.close()

    @staticmethod
    async def _stop(task: asyncio.Task) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _watch(self, spec: InstanceSpec, inst_id: str, host: str, port: int) -> None:
        def emit(kind: K, detail: str = "") -> None:
            self._hub.emit(InstanceEvent(kind, spec.version_id, inst_id, host, port, detail, spec.gpu_spec_id))

        emit(K.STARTING)
        ready = False
        try:
            deadline = time.monotonic() + self.startup_timeout
            last = "no health check answered yet"
            while (problem := await probe(spec.health, host, port)) is not None:
                last = problem
                if time.monotonic() >= deadline:
                    emit(K.FAILED, f"endpoint {host}:{port} did not become healthy within {self.startup_timeout:g}s (last: {last})")
                    return
                await asyncio.sleep(min(self.probe_interval, 0.2))
            ready = True
            emit(K.READY)
            failures = 0
            while True:
                await asyncio.sleep(self.probe_interval)
                problem = await probe(spec.health, host, port)
                if problem is None:
                    failures = 0
                    if not ready:
                        ready = True
                        emit(K.READY)
                    continue
                failures += 1
                if ready and failures >= self.unhealthy_after:
                    ready = False
                    emit(K.LOST, f"unhealthy ({problem})")
        finally:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]  # runs inside its task
                emit(K.LOST, "stopped")
