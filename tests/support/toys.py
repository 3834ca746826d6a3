"""Shared helpers for backend tests: toy images, specs, and an event tracker."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fngate.backends.base import HealthCheck, InstanceEvent, InstanceSpec
from fngate.backends.base import InstanceEventKind as K
from fngate.backends.catalog import ImageCatalog

TOY = str(Path(__file__).with_name("toy_worker.py"))


def toy_catalog(extra: dict | None = None) -> ImageCatalog:
    return ImageCatalog(
        {
            "test/toy": [sys.executable, TOY, "--host", "{host}", "--port", "{port}"],
            "test/unhealthy": [sys.executable, TOY, "--host", "{host}", "--port", "{port}", "--health-status", "503"],
            "test/ignores-sigterm": [sys.executable, TOY, "--host", "{host}", "--port", "{port}", "--ignore-sigterm"],
            "test/exits": [sys.executable, "-c", "import sys; print('cannot load model weights'); sys.exit(3)"],
            **(extra or {}),
        }
    )


def toy_spec(
    version: str = "v1", image: str = "test/toy", *, instance_type: str = "NCP.GPU.L40S_1x", gpu: str = "L40S", **kw
) -> InstanceSpec:
    kw.setdefault("health", HealthCheck(uri="/health", timeout_s=1.0))
    return InstanceSpec(
        function_id="f-" + version,
        version_id=version,
        function_name="toy",
        container_image=image,
        gpu_spec_id="g1",
        gpu=gpu,
        instance_type=instance_type,
        **kw,
    )


class Tracker:
    """Follows a backend's events and keeps the ready set per version."""

    def __init__(self, backend) -> None:
        self.events: list[InstanceEvent] = []
        self.ready: dict[str, InstanceEvent] = {}
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(backend.events()))

    async def _run(self, stream) -> None:
        async for e in stream:
            self.events.append(e)
            if e.kind is K.READY:
                self.ready[e.instance_id] = e
            else:
                self.ready.pop(e.instance_id, None)
            self._changed.set()

    def ready_of(self, version: str) -> list[InstanceEvent]:
        return [e for e in self.ready.values() if e.version_id == version]

    def of_kind(self, kind: K, version: str | None = None) -> list[InstanceEvent]:
        return [e for e in self.events if e.kind is kind and version in (None, e.version_id)]

    async def until(self, predicate, timeout: float = 15.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
