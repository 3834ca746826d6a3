"""FakeBackend: an in-memory, scripted backend for control-plane tests.

Instances are records, not processes. By default a new instance becomes READY at
once; with `auto_ready=False` the test drives it (`make_ready`, `lose`, `fail`).
Every instance reports the same address (`address=`), so a test can point them
all at one real server. Capacity comes from a real Inventory, so placement
failures behave as on the local backend.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fngate.proxy.config import LOOPBACK

from .base import BackendError, InstanceEvent, InstanceSpec
from .base import InstanceEventKind as K
from .hub import EventHub
from .inventory import Inventory, PlacementError


class FakeBackend:
    def __init__(
        self,
        name: str = "fake",
        *,
        auto_ready: bool = True,
        inventory: Inventory | None = None,
        address: tuple[str, int] = (LOOPBACK, 9),
        bad_images: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.auto_ready = auto_ready
        self.inventory = inventory or Inventory()
        self.address = address
        self.bad_images = bad_images
        self.calls: list[tuple[str, str, int]] = []  # ("apply"|"remove"|"stop", version id, replicas)
        self._instances: dict[str, tuple[str, str, bool]] = {}  # id -> (version id, gpu spec id, ready)
        self._hub = EventHub()

    async def apply(self, spec: InstanceSpec, replicas: int) -> None:
        self.calls.append(("apply", spec.version_id, replicas))
        if spec.container_image in self.bad_images:
            raise BackendError(f"unknown container image {spec.container_image!r}")
        mine = [i for i, (v, g, _) in self._instances.items() if (v, g) == (spec.version_id, spec.gpu_spec_id)]
        for inst_id in sorted(mine, key=lambda i: self._instances[i][2])[: max(len(mine) - replicas, 0)]:
            self._drop(inst_id, "stopped")
        for _ in range(replicas - len(mine)):
            inst_id = str(uuid.uuid4())
            self.inventory.reserve(inst_id, spec.instance_type, spec.gpu)  # PlacementError propagates
            self._instances[inst_id] = (spec.version_id, spec.gpu_spec_id, False)
            self._emit(K.STARTING, inst_id)
            if self.auto_ready:
                self.make_ready(inst_id)

    async def remove(self, version_id: str, *, graceful: bool = True) -> None:
        self.calls.append(("remove", version_id, 0))
        for inst_id in self.instance_ids(version_id):
            self._drop(inst_id, "stopped")

    async def stop_instances(self, version_id: str, instance_ids: list[str], *, graceful: bool = True) -> None:
        self.calls.append(("stop", version_id, len(instance_ids)))
        for inst_id in self.instance_ids(version_id):
            if inst_id in instance_ids:
                self._drop(inst_id, "stopped")

    def events(self) -> AsyncIterator[InstanceEvent]:
        return self._hub.subscribe()

    def capacity(self) -> list[dict[str, Any]]:
        return self.inventory.capacity()

    async def aclose(self) -> None:
        for inst_id in list(self._instances):
            self._drop(inst_id, "stopped")
        self._hub.close()

    # -- script ---------------------------------------------------------------------------
    def instance_ids(self, version_id: str, *, ready: bool | None = None) -> list[str]:
        return [i for i, (v, _, r) in self._instances.items() if v == version_id and ready in (None, r)]

    def make_ready(self, inst_id: str) -> None:
        v, g, _ = self._instances[inst_id]
        self._instances[inst_id] = (v, g, True)
        self._emit(K.READY, inst_id)

    def lose(self, inst_id: str, reason: str = "lost") -> None:
        """The instance stops being usable but stays placed (as a crashed process would)."""
        v, g, _ = self._instances[inst_id]
        self._instances[inst_id] = (v, g, False)
        self._emit(K.LOST, inst_id, reason)

    def fail(self, inst_id: str, reason: str) -> None:
        self._emit(K.FAILED, inst_id, reason)
        self._instances.pop(inst_id, None)
        self.inventory.release(inst_id)

    def _drop(self, inst_id: str, reason: str) -> None:
        self._emit(K.LOST, inst_id, reason)
        self._instances.pop(inst_id, None)
        self.inventory.release(inst_id)

    def _emit(self, kind: K, inst_id: str, detail: str = "") -> None:
        v, g, _ = self._instances[inst_id]
        host, port = self.address
        self._hub.emit(InstanceEvent(kind, v, inst_id, host, port, detail, g))


__all__ = ["FakeBackend", "PlacementError"]
